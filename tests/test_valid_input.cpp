// SPEC section 5's other side: what validation must accept. The valid problem computes the reference result,
// permuted views are accepted, state and out may interleave in one buffer when they share no byte, and an empty KV
// segment is accepted, leaves the state untouched and still merges sinks. (The bad inputs: test_validation.cpp.)
#include "reference/reference.h"
#include "support/buffer.h"
#include "support/validation_problem.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using fst_test::Buffer;
using fst_test::call;
using fst_test::Dims;
using fst_test::Entry;
using fst_test::kCanary;
using fst_test::Problem;
using fst_test::Snapshot;
using fst_test::snapshot;

namespace {

const float kInf = std::numeric_limits<float>::infinity();

// The (M, S) of every row and the output against the double reference (SPEC section 4 bound).
void expect_matches_reference(const ref::Result &want, Buffer &state, Buffer &out) {
    EXPECT_LT(ref::rel_error(want, out.t), 1e-5);
    for (int64_t s = 0; s < want.n_seq; ++s)
        for (int64_t r = 0; r < want.n_q; ++r)
            for (int64_t h = 0; h < want.n_head; ++h) {
                const size_t i = size_t((s * want.n_q + r) * want.n_head + h);
                const double m = *state.f32(0, h, r, s), sum = *state.f32(1, h, r, s);
                EXPECT_NEAR(m, want.M[i], 1e-5 * std::max(1.0, std::fabs(want.M[i]))) << h << " " << r << " " << s;
                EXPECT_NEAR(sum, want.S[i], 1e-5 * want.S[i]) << h << " " << r << " " << s;
            }
}

TEST(ValidInput, ComputesTheReferenceResult) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    const uint16_t minus_inf = 0xFC00;
    std::memcpy(p.mask.row(2, 1, 0) + 2 * 5, &minus_inf, 2); // one -inf entry in the mask
    ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error();
    expect_matches_reference(ref::attention(p.params, p.q.t, p.k.t, p.v.t, &p.mask.t, &p.sinks.t), p.state, p.out);
}

// q stored head-major ([D, n_head, n_q, n_seq] in memory) and passed as the permuted view [D, n_q, n_head, n_seq]:
// nb[1] > nb[2] is a legal layout whose rows do not overlap.
TEST(ValidInput, AcceptsAPermutedQueryView) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    const Dims &d = p.dims;
    Buffer stored(FST_TYPE_F32, {d.D, d.n_head, d.n_q, d.n_seq});
    std::mt19937 rng(99);
    stored.fill_normal(rng);
    p.q = stored;
    std::swap(p.q.t.ne[1], p.q.t.ne[2]);
    std::swap(p.q.t.nb[1], p.q.t.nb[2]);
    ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error();
    expect_matches_reference(ref::attention(p.params, p.q.t, p.k.t, p.v.t, &p.mask.t, &p.sinks.t), p.state, p.out);
}

// A KV range of one key: K's and V's row stride (nb[1]) never steps anywhere, and any value is a valid view, here one
// near 2^64. The kernels prefetch rows ahead of the one they read and formed that address as a pointer, which such a
// stride made wrap around (undefined behaviour: the sanitizer build of this test reported it); now it is integer
// arithmetic. The result must be the bits of the ordinary strides.
TEST(ValidInput, AcceptsAnyRowStrideForOneKey) {
    Dims d;
    d.n_kv = 1;
    Problem ordinary(d), odd(d);
    ASSERT_EQ(ordinary.setup_status, FST_OK);
    ASSERT_EQ(odd.setup_status, FST_OK);
    odd.k.t.nb[1] = odd.v.t.nb[1] = ~size_t(0) - 255;
    ASSERT_EQ(call(Entry::attn, ordinary), FST_OK) << fst_last_error();
    ASSERT_EQ(call(Entry::attn, odd), FST_OK) << fst_last_error();
    EXPECT_TRUE(odd.out.storage == ordinary.out.storage && odd.state.storage == ordinary.state.storage);
}

// The other side of the base cases: 2, e as SPEC writes it, and e rounded to float are all accepted.
TEST(ValidInput, AcceptsBase2AndE) {
    for (float base : {2.0f, 2.718281828f, float(M_E)}) {
        Problem p;
        ASSERT_EQ(p.setup_status, FST_OK);
        p.base = base;
        EXPECT_EQ(call(Entry::export_lse, p), FST_OK) << base << ": " << fst_last_error();
        EXPECT_EQ(call(Entry::import_lse, p), FST_OK) << base << ": " << fst_last_error();
    }
}

// State and out packed in one buffer, each query row's M, S and O side by side ([2 + DV] floats per row, a layout an
// engine may keep for its partial results): the byte ranges of state and out interleave but share no byte. Init,
// the attention call and the merge accept them and give the bits of separate buffers; packed so that they do share
// bytes (O starting on S), they are refused without a byte written.
struct PackedRows {
    Buffer b;
    fst_tensor state{}, out{};
    explicit PackedRows(const Dims &d, int64_t o_offset = 2) : b(FST_TYPE_F32, {2 + d.DV, d.n_head, d.n_q, d.n_seq}) {
        state = out = b.t;
        state.ne[0] = 2;
        out.ne[0] = d.DV;
        out.data = b.f32(o_offset);
    }
};

void expect_same_rows(const Dims &d, Buffer &state, Buffer &out, PackedRows &packed) {
    for (int64_t s = 0; s < d.n_seq; ++s)
        for (int64_t r = 0; r < d.n_q; ++r)
            for (int64_t h = 0; h < d.n_head; ++h) {
                EXPECT_EQ(std::memcmp(state.f32(0, h, r, s), packed.b.f32(0, h, r, s), 8), 0) << h << " " << r << " " << s;
                EXPECT_EQ(std::memcmp(out.f32(0, h, r, s), packed.b.f32(2, h, r, s), size_t(d.DV) * 4), 0)
                    << h << " " << r << " " << s;
            }
}

TEST(ValidInput, AcceptsStateAndOutPackedInOneRow) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    const Dims &d = p.dims;
    PackedRows packed(d), other(d);
    ASSERT_EQ(fst_state_init(&packed.state, &packed.out), FST_OK) << fst_last_error();
    ASSERT_EQ(fst_state_init(&other.state, &other.out), FST_OK) << fst_last_error();
    expect_same_rows(d, p.state, p.out, packed);

    // attention into both layouts, then a second segment computed apart and merged in
    ASSERT_EQ(fst_attn_with_state(&p.params, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, nullptr, &p.state.t, &p.out.t), FST_OK);
    ASSERT_EQ(fst_attn_with_state(&p.params, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, nullptr, &packed.state, &packed.out), FST_OK)
        << fst_last_error();
    expect_same_rows(d, p.state, p.out, packed);
    fst_attn_params shifted = p.params;
    shifted.scale = 0.3f;
    ASSERT_EQ(fst_attn_with_state(&shifted, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, &p.sinks.t, &p.other_state.t, &p.other_out.t), FST_OK);
    ASSERT_EQ(fst_attn_with_state(&shifted, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, &p.sinks.t, &other.state, &other.out), FST_OK)
        << fst_last_error();
    ASSERT_EQ(fst_state_merge(&p.state.t, &p.out.t, &p.other_state.t, &p.other_out.t), FST_OK);
    ASSERT_EQ(fst_state_merge(&packed.state, &packed.out, &other.state, &other.out), FST_OK) << fst_last_error();
    expect_same_rows(d, p.state, p.out, packed);

    // O shifted onto S: every row of out shares its first float with its row's S.
    PackedRows clash(d, 1);
    std::fill(clash.b.storage.begin(), clash.b.storage.end(), kCanary);
    const std::vector<unsigned char> before = clash.b.storage;
    EXPECT_EQ(fst_state_init(&clash.state, &clash.out), FST_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fst_last_error()).find("out overlaps state"), std::string::npos) << fst_last_error();
    EXPECT_EQ(fst_attn_with_state(&p.params, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, nullptr, &clash.state, &clash.out),
              FST_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fst_last_error()).find("overlaps"), std::string::npos) << fst_last_error();
    EXPECT_TRUE(clash.b.storage == before);
}

// The rule behind the test above, on random layouts: state and out views of one buffer with random extents, strides
// and offsets. Whenever the views share a byte (found by listing every byte of both), init must refuse them; some
// interleaved layouts must be accepted (else the rule would be unused), and an accepted init writes its values.
TEST(ValidInput, InterleavedOutputsAreAcceptedOnlyWhenNoByteIsShared) {
    std::mt19937 rng(2024);
    auto pick = [&](int lo, int hi) { return int(std::uniform_int_distribution<int>(lo, hi)(rng)); };
    std::vector<float> buf(2048);
    int accepted_interleaved = 0, refused_shared = 0;
    for (int trial = 0; trial < 4000; ++trial) {
        const int64_t n1 = pick(1, 4), n2 = pick(1, 3), dv = pick(1, 6);
        fst_tensor st = fst_tensor_contiguous(FST_TYPE_F32, 2, n1, n2, 1, nullptr);
        fst_tensor o = fst_tensor_contiguous(FST_TYPE_F32, dv, n1, n2, 1, nullptr);
        const bool same_strides = pick(0, 1) == 1; // packed rows share their strides; other layouts need not
        const size_t stride1 = size_t(4 * pick(int(std::max<int64_t>(2, dv)), int(dv + 4)));
        st.nb[1] = same_strides ? stride1 : size_t(4 * pick(2, 8));
        o.nb[1] = same_strides ? stride1 : size_t(4 * pick(int(dv), int(dv + 6)));
        st.nb[2] = st.nb[1] * size_t(n1) + (same_strides ? 0 : size_t(4 * pick(0, 3)));
        o.nb[2] = same_strides ? st.nb[2] : o.nb[1] * size_t(n1) + size_t(4 * pick(0, 3));
        st.nb[3] = st.nb[2] * size_t(n2);
        o.nb[3] = o.nb[2] * size_t(n2);
        const size_t st_off = size_t(4 * pick(0, 16)), o_off = size_t(4 * pick(0, 16));
        st.data = buf.data() + st_off / 4;
        o.data = buf.data() + o_off / 4;
        // Every byte (as a float index) of each view.
        std::vector<char> in_st(buf.size(), 0);
        bool shared = false, ranges_meet = false;
        size_t st_lo = buf.size(), st_hi = 0, o_lo = buf.size(), o_hi = 0;
        for (int64_t j = 0; j < n2; ++j)
            for (int64_t i = 0; i < n1; ++i)
                for (int64_t e = 0; e < 2; ++e) {
                    const size_t f = (st_off + size_t(i) * st.nb[1] + size_t(j) * st.nb[2]) / 4 + size_t(e);
                    in_st[f] = 1;
                    st_lo = std::min(st_lo, f), st_hi = std::max(st_hi, f + 1);
                }
        for (int64_t j = 0; j < n2; ++j)
            for (int64_t i = 0; i < n1; ++i)
                for (int64_t e = 0; e < dv; ++e) {
                    const size_t f = (o_off + size_t(i) * o.nb[1] + size_t(j) * o.nb[2]) / 4 + size_t(e);
                    shared = shared || in_st[f];
                    o_lo = std::min(o_lo, f), o_hi = std::max(o_hi, f + 1);
                }
        ranges_meet = st_lo < o_hi && o_lo < st_hi;
        std::fill(buf.begin(), buf.end(), 7.0f);
        const fst_status status = fst_state_init(&st, &o);
        if (shared) {
            EXPECT_EQ(status, FST_ERR_INVALID_ARGUMENT) << "trial " << trial;
            EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](float x) { return x == 7.0f; })) << "trial " << trial;
            ++refused_shared;
        } else if (status == FST_OK) {
            accepted_interleaved += ranges_meet;
            for (int64_t j = 0; j < n2; ++j)
                for (int64_t i = 0; i < n1; ++i) {
                    const float *srow = buf.data() + (st_off + size_t(i) * st.nb[1] + size_t(j) * st.nb[2]) / 4;
                    const float *orow = buf.data() + (o_off + size_t(i) * o.nb[1] + size_t(j) * o.nb[2]) / 4;
                    EXPECT_EQ(srow[0], -kInf) << "trial " << trial;
                    EXPECT_EQ(srow[1], 0.0f) << "trial " << trial;
                    for (int64_t e = 0; e < dv; ++e) EXPECT_EQ(orow[e], 0.0f) << "trial " << trial;
                }
        }
    }
    EXPECT_GT(accepted_interleaved, 100);
    EXPECT_GT(refused_shared, 100);
}

// An empty segment of a KV cache: no keys, NULL data, zero-width mask and kv_pos slices.
struct EmptySegment {
    fst_tensor k, v, mask, kv_pos;
    explicit EmptySegment(const Problem &p) : k(p.k.t), v(p.v.t), mask(p.mask.t), kv_pos(p.kv_pos.t) {
        k.ne[1] = v.ne[1] = mask.ne[0] = kv_pos.ne[0] = 0;
        k.data = v.data = mask.data = kv_pos.data = nullptr;
    }
};

TEST(EmptySegment, IsAcceptedAndLeavesStateAndOutputBitIdentical) {
    for (const char *variant : {"zero-width mask", "no mask", "causal with position tensors"}) {
        SCOPED_TRACE(variant);
        Problem p;
        ASSERT_EQ(p.setup_status, FST_OK);
        p.with_sinks = false;
        p.with_mask = std::string(variant) != "no mask";
        if (std::string(variant) == "causal with position tensors") p.use_positions();
        ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error(); // a real first segment
        const Snapshot before = snapshot(p);
        const EmptySegment e(p);
        fst_attn_params params = p.params;
        if (p.with_q_pos) params.q_pos = &p.q_pos.t;
        if (p.with_kv_pos) params.kv_pos = &e.kv_pos;
        const fst_status s = fst_attn_with_state(&params, &p.q.t, &e.k, &e.v, p.with_mask ? &e.mask : nullptr, nullptr,
                                                 &p.state.t, &p.out.t);
        ASSERT_EQ(s, FST_OK) << fst_last_error();
        const Snapshot after = snapshot(p);
        EXPECT_TRUE(before.storages == after.storages);
    }
}

TEST(EmptySegment, StillMergesSinksOnce) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    p.with_sinks = false;
    ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error(); // the whole KV range, without sinks
    const EmptySegment e(p);
    ASSERT_EQ(fst_attn_with_state(&p.params, &p.q.t, &e.k, &e.v, &e.mask, &p.sinks.t, &p.state.t, &p.out.t), FST_OK)
        << fst_last_error();
    expect_matches_reference(ref::attention(p.params, p.q.t, p.k.t, p.v.t, &p.mask.t, &p.sinks.t), p.state, p.out);
}

} // namespace
