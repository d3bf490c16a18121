// fst_attn_paged: a paged KV cache (K/V rows in pages of a pool, a page table per KV sequence) gives bit for bit what
// fst_attn_with_state gives over the same keys stored contiguously — for every K/V type, page size (within a kernel
// chunk and beyond it), page layout, feature (mask, positions, ALiBi, softcap, sinks, GQA, sequences), thread count
// and ith/nth part — and the double reference's result within the attention tests' bound. Bad pools and page tables
// are refused with a message that names them, leaving the outputs untouched.
#include "support/cases.h"

#include <flashstate/flashstate.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

using namespace fst_test;

namespace {

const double tolerance = 1e-5; // as tests/test_attention.cpp

// A problem's K and V copied into pages of page_keys keys: each KV sequence's pages at random places of a pool that
// also holds pages nobody uses (filled with NaN bytes: reading one would show). keys_outer lays a page out as
// [keys][heads][D] (vLLM's layout), so that nb[2] < nb[1]; otherwise [heads][keys][D].
struct Paged {
    Buffer k_pool, v_pool, table;
    fst_paged_kv kv{};
    fst_tensor k_view{}, v_view{};

    unsigned char *entry(int64_t i, int64_t s) { return table.storage.data() + i * table.t.nb[0] + s * table.t.nb[1]; }

    Paged(const Problem &pb, int64_t page_keys, bool keys_outer, std::mt19937 &rng) {
        const Spec &s = pb.spec;
        const int64_t per_seq = (s.n_kv + page_keys - 1) / page_keys, spare = 3;
        const int64_t n_pages = per_seq * s.n_seq_kv + spare;
        k_pool = Buffer(s.k_type, {s.D, page_keys, s.n_head_kv, n_pages});
        v_pool = Buffer(s.v_type, {s.DV, page_keys, s.n_head_kv, n_pages});
        k_view = pool_view(k_pool, keys_outer);
        v_view = pool_view(v_pool, keys_outer);
        std::vector<int32_t> order(static_cast<size_t>(n_pages));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        // One more table entry than needed, holding a page index out of range: nothing may read it.
        table = Buffer(FST_TYPE_I32, {per_seq + 1, s.n_seq_kv, 1, 1});
        const fst_tensor k = pb.k(), v = pb.v();
        for (int64_t sk = 0; sk < s.n_seq_kv; ++sk) {
            for (int64_t i = 0; i <= per_seq; ++i) {
                const int32_t page = i < per_seq ? order[size_t(sk * per_seq + i)] : int32_t(n_pages + 7);
                std::memcpy(entry(i, sk), &page, 4);
            }
            for (int64_t j = 0; j < s.n_kv; ++j) {
                int32_t page;
                std::memcpy(&page, entry(j / page_keys, sk), 4);
                for (int64_t h = 0; h < s.n_head_kv; ++h) {
                    copy_row(k, j, h, sk, k_view, j % page_keys, page);
                    copy_row(v, j, h, sk, v_view, j % page_keys, page);
                }
            }
        }
        kv.k = &k_view;
        kv.v = &v_view;
        kv.page_table = &table.t;
        kv.n_kv = s.n_kv;
    }

    static fst_tensor pool_view(Buffer &b, bool keys_outer) {
        b.fill_bytes(0xff); // F32/F16/BF16 NaN; Q8_0/Q4_0 blocks with a NaN scale
        fst_tensor view = b.t;
        if (keys_outer) {
            const size_t row = b.t.nb[1];
            view.nb[2] = row;
            view.nb[1] = row * size_t(b.t.ne[2]);
        }
        return view;
    }

    static void copy_row(const fst_tensor &from, int64_t j, int64_t h, int64_t s, const fst_tensor &to, int64_t r, int64_t page) {
        const size_t bytes = fst_type_size(from.type) * size_t(from.ne[0] / fst_type_block_size(from.type));
        const auto *src = static_cast<const unsigned char *>(from.data) + j * from.nb[1] + h * from.nb[2] + s * from.nb[3];
        auto *dst = static_cast<unsigned char *>(to.data) + r * to.nb[1] + h * to.nb[2] + page * to.nb[3];
        std::memcpy(dst, src, bytes);
    }
};

struct Result {
    Buffer state, out;
};

Result contiguous(const Problem &pb, int n_threads) {
    Result r{pb.make_state(), pb.make_out()};
    EXPECT_EQ(fst_state_init(&r.state.t, &r.out.t), FST_OK) << fst_last_error();
    fst_attn_params p = pb.params();
    p.n_threads = n_threads;
    const fst_tensor q = pb.q(), k = pb.k(), v = pb.v();
    EXPECT_EQ(fst_attn_with_state(&p, &q, &k, &v, pb.mask(), pb.sinks(), &r.state.t, &r.out.t), FST_OK) << fst_last_error();
    return r;
}

// nth = 0: the whole call on n_threads; else parts 0..nth-1 one after the other.
Result paged(const Problem &pb, const Paged &pg, int n_threads, int nth = 0) {
    Result r{pb.make_state(), pb.make_out()};
    EXPECT_EQ(fst_state_init(&r.state.t, &r.out.t), FST_OK) << fst_last_error();
    fst_attn_params p = pb.params();
    p.n_threads = n_threads;
    const fst_tensor q = pb.q();
    if (nth == 0) {
        EXPECT_EQ(fst_attn_paged(&p, &q, &pg.kv, pb.mask(), pb.sinks(), &r.state.t, &r.out.t), FST_OK) << fst_last_error();
    } else {
        for (int ith = 0; ith < nth; ++ith)
            EXPECT_EQ(fst_attn_paged_part(&p, &q, &pg.kv, pb.mask(), pb.sinks(), &r.state.t, &r.out.t, ith, nth), FST_OK)
                << fst_last_error();
    }
    return r;
}

bool same_bytes(const Buffer &a, const Buffer &b) { return a.storage == b.storage; }

// The contiguous call against the reference (the bound of the attention tests).
void check_reference(const Problem &pb, const std::string &what) {
    const Result want = contiguous(pb, 1);
    const ref::Result r = pb.reference(true);
    const StateError se = state_error(want.state.t, r);
    EXPECT_LE(ref::rel_error(r, want.out.t), tolerance) << what;
    EXPECT_LE(std::max(se.m, se.s), tolerance) << what;
}

// Paged against contiguous, bit for bit, for one problem and page layout.
void check(const Problem &pb, int64_t page_keys, bool keys_outer, std::mt19937 &rng, const std::string &what) {
    const Paged pg(pb, page_keys, keys_outer, rng);
    const Result want = contiguous(pb, 1);
    for (int threads : {1, 2, 3}) {
        const Result got = paged(pb, pg, threads);
        EXPECT_TRUE(same_bytes(got.out, want.out) && same_bytes(got.state, want.state))
            << what << ", " << threads << " threads: paged differs from contiguous";
    }
    const Result parts = paged(pb, pg, 1, 3);
    EXPECT_TRUE(same_bytes(parts.out, want.out) && same_bytes(parts.state, want.state)) << what << ", 3 parts";
}

std::string name(const Spec &s, int64_t page_keys, bool keys_outer) {
    return describe(s) + " page_keys=" + std::to_string(page_keys) + (keys_outer ? " keys-outer" : "");
}

} // namespace

// Random problems (every feature, every K/V type pair), pages of 1 to 512 keys in either layout.
TEST(Paged, RandomProblemsEqualContiguousBitForBit) {
    std::mt19937 rng(20261206);
    for (int i = 0; i < 60; ++i) {
        const uint32_t seed = rng();
        std::mt19937 r(seed);
        Spec s = random_spec(r);
        make_consistent(s);
        const Problem pb(s, seed);
        const int64_t page_keys = int64_t(1) << (r() % 10);
        const bool keys_outer = r() % 2;
        const std::string what = "seed " + std::to_string(seed) + ": " + name(s, page_keys, keys_outer);
        check(pb, page_keys, keys_outer, r, what);
        check_reference(pb, what);
    }
}

// Several kernel chunks (1024 keys each), decode and prefill shapes (row groups, rows as lanes), pages shorter than a
// chunk (the kernels' page pointers, prefetching across pages and chunks) and longer (a chunk inside one page).
TEST(Paged, SeveralChunksEveryPageSize) {
    std::mt19937 rng(7);
    for (fst_type t : kv_types())
        for (int64_t n_q : {1, 10}) {
            Spec s;
            s.D = s.DV = 128;
            s.n_q = n_q;
            s.n_head = 8;
            s.n_head_kv = 2;
            s.k_type = s.v_type = t;
            s.has_mask = n_q > 1;
            s.mask_inf_fraction = 0.1;
            s.virtual_mask = n_q > 1 ? FST_MASK_NONE : FST_MASK_CAUSAL;
            make_consistent(s); // (which would cut n_kv to keep the reference quick)
            s.n_kv = 2500;
            s.q_pos0 = s.n_kv - 1;
            const Problem pb(s, uint32_t(n_q));
            if (n_q == 1) check_reference(pb, describe(s)); // (10 rows: the slow double reference's 90 % of the test)
            for (int64_t page_keys : {1, 4, 16, 64, 256, 1024, 4096})
                check(pb, page_keys, page_keys == 64, rng, name(s, page_keys, page_keys == 64));
        }
}

// Enough KV heads (32) that the keys are not cut into pieces for the threads, so F32/F16/BF16 row groups take
// several chunks per kernel call (tile.cpp's spans), each chunk with its own page pointers: bit for bit the
// contiguous call, pages shorter than a chunk and longer, a mask tensor hiding some keys.
TEST(Paged, SpansOfChunksEachWithItsPages) {
    std::mt19937 rng(8);
    for (fst_type t : kv_types()) {
        const Spec s = spans_decode_spec(t, 4300, 0.1); // chunks 0-3 in one span, chunk 4 alone
        const Problem pb(s, 11);
        for (int64_t page_keys : {16, 256, 2048})
            check(pb, page_keys, page_keys == 256, rng, name(s, page_keys, page_keys == 256));
    }
}

// Pages of one key: a pool's row stride (nb[1]) then never steps anywhere, and any value is a valid view. Found by
// fuzz_paged (fuzz/regressions/fuzz_paged/one-key-pages-wrapping-row-stride): the kernel formed the pointer
// k + j0 * nb[1] for every block even when paged, which with a stride near 2^64 wrapped around (undefined behaviour,
// reported by UBSan, so the sanitizer build of this test is the one that catches it). Strides near 2^64, 2^63 and
// 2^40 must give the bits of the ordinary pool.
TEST(Paged, OneKeyPagesWithAnyRowStride) {
    std::mt19937 rng(9);
    for (fst_type t : {FST_TYPE_F16, FST_TYPE_Q8_0}) {
        Spec s;
        s.D = s.DV = 32;
        s.n_head = 8;
        s.n_head_kv = 2;
        s.k_type = s.v_type = t;
        make_consistent(s);
        s.n_kv = 300; // several 64-key blocks
        const Problem pb(s, 12);
        const Paged ordinary(pb, 1, false, rng);
        const Result want = paged(pb, ordinary, 1);
        for (size_t stride : {~size_t(0) - 255, size_t(1) << 63, size_t(1) << 40}) {
            Paged odd = ordinary;
            odd.k_view.nb[1] = odd.v_view.nb[1] = stride;
            odd.kv.k = &odd.k_view;
            odd.kv.v = &odd.v_view;
            odd.kv.page_table = &odd.table.t;
            const Result got = paged(pb, odd, 2);
            EXPECT_TRUE(same_bytes(got.out, want.out) && same_bytes(got.state, want.state))
                << fst_type_name(t) << " nb[1] = " << stride;
        }
    }
}

// KV sequences with their own page tables and a mask per sequence, positions from tensors.
TEST(Paged, SequencesAndPositionTensors) {
    std::mt19937 rng(11);
    Spec s;
    s.D = s.DV = 64;
    s.n_q = 3;
    s.n_kv = 1500;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_seq = s.n_seq_kv = 2;
    s.k_type = FST_TYPE_F16;
    s.v_type = FST_TYPE_Q8_0;
    s.has_mask = true;
    s.m3 = 2;
    s.virtual_mask = FST_MASK_SLIDING_WINDOW;
    s.window = 700;
    s.q_pos_tensor = s.kv_pos_tensor = true;
    s.pos_columns = 2;
    s.max_bias = 8;
    s.has_sinks = true;
    make_consistent(s);
    s.n_kv = 1500;
    s.q_pos0 = s.n_kv - s.n_q;
    const Problem pb(s, 99);
    check_reference(pb, describe(s));
    for (int64_t page_keys : {2, 32, 2048}) check(pb, page_keys, false, rng, name(s, page_keys, false));
}

TEST(Paged, NoKeysAndNoPages) {
    Spec s;
    s.n_kv = 0;
    s.has_sinks = true;
    make_consistent(s);
    const Problem pb(s, 1);
    Buffer k_pool(s.k_type, {s.D, 16, s.n_head_kv, 0}), v_pool(s.v_type, {s.DV, 16, s.n_head_kv, 0});
    Buffer table(FST_TYPE_I32, {0, s.n_seq_kv, 1, 1});
    fst_paged_kv kv{&k_pool.t, &v_pool.t, &table.t, 0};
    Result got{pb.make_state(), pb.make_out()};
    ASSERT_EQ(fst_state_init(&got.state.t, &got.out.t), FST_OK);
    fst_attn_params p = pb.params();
    const fst_tensor q = pb.q();
    ASSERT_EQ(fst_attn_paged(&p, &q, &kv, nullptr, pb.sinks(), &got.state.t, &got.out.t), FST_OK) << fst_last_error();
    const Result want = contiguous(pb, 1);
    EXPECT_TRUE(same_bytes(got.out, want.out) && same_bytes(got.state, want.state));
}

// Each bad argument: FST_ERR_INVALID_ARGUMENT (a type not allowed: FST_ERR_UNSUPPORTED), a message naming the tensor and what was expected, outputs untouched.
TEST(Paged, BadPoolsAndPageTablesAreRefused) {
    Spec s;
    s.D = s.DV = 32;
    s.n_kv = 100;
    s.n_head = 2;
    s.n_head_kv = 1;
    s.n_seq = s.n_seq_kv = 2;
    make_consistent(s);
    const Problem pb(s, 5);
    std::mt19937 rng(3);
    const Paged good(pb, 32, false, rng);
    struct Case {
        std::string what, expect1, expect2;
        std::function<void(Paged &)> spoil;
        fst_status status = FST_ERR_INVALID_ARGUMENT;
    };
    const std::vector<Case> cases = {
        {"page size not a power of two", "kv.k", "power of two", [](Paged &p) { p.k_view.ne[1] = 24; }},
        {"page size 12", "kv.k", "power of two", [](Paged &p) { p.k_view.ne[1] = p.v_view.ne[1] = 12; }},
        {"V pages of another size", "kv.v", "keys per page", [](Paged &p) { p.v_view.ne[1] = 16; }},
        {"V pool with fewer pages", "kv.v", "pages", [](Paged &p) { p.v_view.ne[3] -= 1; }},
        {"page index past the pool", "kv.page_table", "[1, 1]",
         [](Paged &p) { const int32_t bad = int32_t(p.k_view.ne[3]); std::memcpy(p.entry(1, 1), &bad, 4); }},
        {"negative page index", "kv.page_table", "[3, 0]",
         [](Paged &p) { const int32_t bad = -1; std::memcpy(p.entry(3, 0), &bad, 4); }},
        {"page table too short", "kv.page_table", "ceil(kv.n_kv", [](Paged &p) { p.table.t.ne[0] = 3; }},
        {"page table for 3 sequences", "kv.page_table", "divisor of n_seq", [](Paged &p) { p.table.t.ne[1] = 3; }},
        {"page table of F32", "kv.page_table", "i32", [](Paged &p) { p.table.t.type = FST_TYPE_F32; }, FST_ERR_UNSUPPORTED},
        {"negative n_kv", "kv", "n_kv", [](Paged &p) { p.kv.n_kv = -1; }},
        // n_kv near the int64 limit: the page count is computed without overflow, and no K view could hold that many
        // keys (a contiguous one holds fewer than 2^62).
        {"n_kv of 2^63 - 1", "kv", "n_kv", [](Paged &p) { p.kv.n_kv = std::numeric_limits<int64_t>::max(); }},
        {"n_kv of 2^62", "kv", "n_kv", [](Paged &p) { p.kv.n_kv = int64_t(1) << 62; }},
        {"n_kv past the table", "kv.page_table", "ceil(kv.n_kv", [](Paged &p) { p.kv.n_kv = (int64_t(1) << 62) - 1; }},
    };
    for (const Case &c : cases) {
        Paged bad = good; // copies the buffers; the views must point at the copies
        bad.k_view.data = bad.k_pool.storage.data();
        bad.v_view.data = bad.v_pool.storage.data();
        bad.kv = fst_paged_kv{&bad.k_view, &bad.v_view, &bad.table.t, good.kv.n_kv};
        c.spoil(bad);
        Result r{pb.make_state(), pb.make_out()};
        r.state.fill_bytes(0x5a);
        r.out.fill_bytes(0x5a);
        const Result before = r;
        fst_attn_params p = pb.params();
        const fst_tensor q = pb.q();
        EXPECT_EQ(fst_attn_paged(&p, &q, &bad.kv, nullptr, nullptr, &r.state.t, &r.out.t), c.status) << c.what;
        const std::string msg = fst_last_error();
        EXPECT_NE(msg.find(c.expect1), std::string::npos) << c.what << ": " << msg;
        EXPECT_NE(msg.find(c.expect2), std::string::npos) << c.what << ": " << msg;
        EXPECT_TRUE(same_bytes(r.state, before.state) && same_bytes(r.out, before.out)) << c.what;
    }
    fst_attn_params p = pb.params();
    const fst_tensor q = pb.q();
    Result r{pb.make_state(), pb.make_out()};
    EXPECT_EQ(fst_attn_paged(&p, &q, nullptr, nullptr, nullptr, &r.state.t, &r.out.t), FST_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fst_last_error()).find("kv"), std::string::npos);
}

// The C++ layer's wrappers: the same bits, a Status with the message, an Error thrown.
TEST(Paged, CppLayer) {
    Spec s;
    s.D = s.DV = 32;
    s.n_kv = 70;
    s.n_head = 2;
    make_consistent(s);
    const Problem pb(s, 8);
    std::mt19937 rng(2);
    Paged pg(pb, 16, false, rng);
    const Result want = paged(pb, pg, 1);
    Result got{pb.make_state(), pb.make_out()};
    flashstate::state_init(got.state.t, got.out.t);
    const fst_attn_params p = pb.params();
    const fst_tensor q = pb.q();
    flashstate::attn_paged(p, q, pg.kv, nullptr, pb.sinks(), got.state.t, got.out.t);
    EXPECT_TRUE(same_bytes(got.out, want.out) && same_bytes(got.state, want.state));
    const int32_t bad = 99;
    std::memcpy(pg.entry(0, 0), &bad, 4);
    const flashstate::Status st = flashstate::try_attn_paged(p, q, pg.kv, nullptr, nullptr, got.state.t, got.out.t);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("kv.page_table"), std::string::npos) << st.message();
    EXPECT_THROW(flashstate::attn_paged_part(p, q, pg.kv, nullptr, nullptr, got.state.t, got.out.t, 0, 1), flashstate::Error);
}

// Sequences sharing the pages of a common prefix (as prefix caching keeps them): both tables list the same pages.
TEST(Paged, SequencesSharingPages) {
    std::mt19937 rng(4);
    Spec s;
    s.D = s.DV = 64;
    s.n_kv = 1200;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_seq = s.n_seq_kv = 2;
    s.k_type = FST_TYPE_Q8_0;
    s.v_type = FST_TYPE_F16;
    make_consistent(s);
    s.n_kv = 1200;
    Problem pb(s, 21);
    const int64_t page_keys = 32, shared_pages = 20; // the first 640 keys
    const size_t k_bytes = pb.k_buf.t.nb[0] * size_t(s.D / 32), v_bytes = 2 * size_t(s.DV);
    for (int64_t h = 0; h < s.n_head_kv; ++h)
        for (int64_t j = 0; j < shared_pages * page_keys; ++j) {
            std::memcpy(pb.k_buf.row(j, h, 1), pb.k_buf.row(j, h, 0), k_bytes);
            std::memcpy(pb.v_buf.row(j, h, 1), pb.v_buf.row(j, h, 0), v_bytes);
        }
    Paged pg(pb, page_keys, false, rng);
    for (int64_t i = 0; i < shared_pages; ++i) { // sequence 1's own copies are no longer listed: NaN them
        int32_t own;
        std::memcpy(&own, pg.entry(i, 1), 4);
        for (int64_t h = 0; h < s.n_head_kv; ++h)
            for (int64_t r = 0; r < page_keys; ++r) {
                std::memset(pg.k_pool.row(r, h, own), 0xff, k_bytes);
                std::memset(pg.v_pool.row(r, h, own), 0xff, v_bytes);
            }
        std::memcpy(pg.entry(i, 1), pg.entry(i, 0), 4);
    }
    const Result want = contiguous(pb, 1);
    for (int threads : {1, 2}) {
        const Result got = paged(pb, pg, threads);
        EXPECT_TRUE(same_bytes(got.out, want.out) && same_bytes(got.state, want.state)) << threads << " threads";
    }
}
