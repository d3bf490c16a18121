// SPEC section 5: NaN or inf in q/k/v is not validated but must not corrupt other rows. Each test computes a clean
// result, poisons one place (a query row, one KV head, a key that some rows cannot see, another sequence's KV) and
// requires every row that cannot read the poison to be bit-identical to the clean run, in out and in state; and
// every result to be bit-identical between 1 and 2 threads (SPEC section 4: split points do not depend on threads),
// for each kernel family the CPU has (portable, AVX2, AVX-512).
// K/V types: F32, F16, BF16, Q8_0 and Q4_0 (for the quantized types the poison is the block's F16 scale).
#include "reference/reference.h"
#include "support/buffer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>

using fst_test::Buffer;

namespace {

struct Shape {
    int64_t D = 64, DV = 64, n_q = 3, n_kv = 80, n_head = 4, n_head_kv = 2, n_seq = 2, n_seq_kv = 2;
    int64_t m2 = 1; // mask heads: 1 broadcasts one mask to every head
};

enum class Poison { nan, inf };
const char *name(Poison p) { return p == Poison::nan ? "NaN" : "+inf"; }

const uint16_t kF16MinusInf = 0xFC00;
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// The inputs of one call. Masks start with a few -inf entries, as real causal/padding masks have.
struct Inputs {
    Shape sh;
    fst_attn_params params = fst_attn_default_params();
    Buffer q, k, v, mask;
    bool with_mask = true;

    Inputs(fst_type kv_type, const Shape &s) : sh(s) {
        std::mt19937 rng(2024);
        params.scale = 0.125f;
        q = Buffer(FST_TYPE_F32, {s.D, s.n_q, s.n_head, s.n_seq});
        k = Buffer(kv_type, {s.D, s.n_kv, s.n_head_kv, s.n_seq_kv});
        v = Buffer(kv_type, {s.DV, s.n_kv, s.n_head_kv, s.n_seq_kv});
        q.fill_normal(rng);
        k.fill_normal(rng);
        v.fill_normal(rng);
        mask = Buffer(FST_TYPE_F16, {s.n_kv, s.n_q, s.m2, 1});
        for (int64_t h = 0; h < s.m2; ++h)
            for (int64_t r = 0; r < s.n_q; ++r)
                for (int64_t j = 0; j < s.n_kv; ++j)
                    if ((j + 3 * r + h) % 17 == 0) set_mask(j, r, h, kF16MinusInf);
    }

    void set_mask(int64_t j, int64_t r, int64_t h, uint16_t f16_bits) {
        std::memcpy(mask.row(r, h) + 2 * j, &f16_bits, 2);
    }

    // Writes the poison into element c of query row (r, h, s).
    void poison_q(int64_t c, int64_t r, int64_t h, int64_t s, Poison p) {
        const float x = p == Poison::nan ? kNaN : kInf;
        std::memcpy(q.row(r, h, s) + 4 * c, &x, 4);
    }
};

// Writes the poison into element c of row (j, hk, sk) of K or V, in the buffer's own format; for Q8_0 and Q4_0
// into the F16 scale of the block that holds element c.
void poison_kv(Buffer &b, int64_t c, int64_t j, int64_t hk, int64_t sk, Poison p) {
    unsigned char *row = b.row(j, hk, sk);
    const bool nan = p == Poison::nan;
    const float f32 = nan ? kNaN : kInf;
    const uint16_t f16 = nan ? 0x7E00 : 0x7C00, bf16 = nan ? 0x7FC0 : 0x7F80;
    switch (b.t.type) {
    case FST_TYPE_F32: std::memcpy(row + 4 * c, &f32, 4); break;
    case FST_TYPE_F16: std::memcpy(row + 2 * c, &f16, 2); break;
    case FST_TYPE_BF16: std::memcpy(row + 2 * c, &bf16, 2); break;
    case FST_TYPE_Q8_0: std::memcpy(row + 34 * (c / 32), &f16, 2); break;
    case FST_TYPE_Q4_0: std::memcpy(row + 18 * (c / 32), &f16, 2); break;
    default: FAIL() << "no poison for this type";
    }
}

// Poisons every block (every 32nd element) of key j in every KV head of KV sequence sk.
void poison_key(Inputs &in, int64_t j, int64_t sk, Poison p) {
    for (int64_t hk = 0; hk < in.sh.n_head_kv; ++hk) {
        for (int64_t c = 0; c < in.sh.D; c += 32) poison_kv(in.k, c, j, hk, sk, p);
        for (int64_t c = 0; c < in.sh.DV; c += 32) poison_kv(in.v, c, j, hk, sk, p);
    }
}

struct Output {
    Buffer state, out;
};

Output run(const Inputs &in, fst_isa isa, int32_t n_threads) {
    const Shape &s = in.sh;
    Output o{Buffer(FST_TYPE_F32, {2, s.n_head, s.n_q, s.n_seq}, {0, 8, 0, 0}),
             Buffer(FST_TYPE_F32, {s.DV, s.n_head, s.n_q, s.n_seq}, {0, 16, 0, 0})};
    EXPECT_EQ(fst_state_init(&o.state.t, &o.out.t), FST_OK) << fst_last_error();
    fst_attn_params p = in.params;
    p.isa = isa;
    p.n_threads = n_threads;
    EXPECT_EQ(fst_attn_with_state(&p, &in.q.t, &in.k.t, &in.v.t, in.with_mask ? &in.mask.t : nullptr, nullptr,
                                  &o.state.t, &o.out.t),
              FST_OK)
        << fst_last_error();
    return o;
}

bool same_row(Output &a, Output &b, int64_t h, int64_t r, int64_t s, int64_t DV) {
    return std::memcmp(a.out.row(h, r, s), b.out.row(h, r, s), size_t(DV) * 4) == 0 &&
           std::memcmp(a.state.row(h, r, s), b.state.row(h, r, s), 8) == 0;
}

using RowSet = std::function<bool(int64_t h, int64_t r, int64_t s)>;

// Rows outside `reach` are bit-identical; at least one row inside differs (the poison did land somewhere).
void expect_isolated(Output &clean, Output &poisoned, const Shape &sh, const RowSet &reach) {
    std::ostringstream corrupted;
    bool some_reached_row_differs = false;
    for (int64_t s = 0; s < sh.n_seq; ++s)
        for (int64_t r = 0; r < sh.n_q; ++r)
            for (int64_t h = 0; h < sh.n_head; ++h) {
                const bool same = same_row(clean, poisoned, h, r, s, sh.DV);
                if (reach(h, r, s)) some_reached_row_differs |= !same;
                else if (!same) corrupted << " (h " << h << ", r " << r << ", s " << s << ")";
            }
    EXPECT_EQ(corrupted.str(), "") << "rows that cannot read the poison changed";
    EXPECT_TRUE(some_reached_row_differs) << "the poison changed nothing: the test would not notice a leak";
}

// Whole buffers equal bit for bit, except that any NaN equals any NaN (payloads of poisoned rows may differ).
void expect_same_bits(const Buffer &a, const Buffer &b, const char *what) {
    ASSERT_EQ(a.storage.size(), b.storage.size());
    size_t differing = 0;
    for (size_t i = 0; i + 4 <= a.storage.size(); i += 4) {
        float x, y;
        std::memcpy(&x, &a.storage[i], 4);
        std::memcpy(&y, &b.storage[i], 4);
        const bool both_nan = x != x && y != y;
        if (!both_nan && std::memcmp(&a.storage[i], &b.storage[i], 4) != 0) ++differing;
    }
    EXPECT_EQ(differing, 0u) << what << ": 1 thread and 2 threads differ in " << differing << " floats";
}

// Runs clean and poisoned inputs with 1 and 2 threads, on every kernel family this CPU has (each has its own
// masking code), and checks isolation and thread independence.
void check(const Inputs &clean_in, const Inputs &poisoned_in, const RowSet &reach) {
    for (int level = FST_ISA_PORTABLE; level <= fst_isa_best(); ++level) {
        const fst_isa isa = fst_isa(level);
        SCOPED_TRACE(fst_isa_name(isa));
        Output clean[2] = {run(clean_in, isa, 1), run(clean_in, isa, 2)};
        Output poisoned[2] = {run(poisoned_in, isa, 1), run(poisoned_in, isa, 2)};
        for (int t = 0; t < 2; ++t) {
            SCOPED_TRACE(t == 0 ? "1 thread" : "2 threads");
            expect_isolated(clean[t], poisoned[t], clean_in.sh, reach);
        }
        expect_same_bits(clean[0].out, clean[1].out, "clean out");
        expect_same_bits(clean[0].state, clean[1].state, "clean state");
        expect_same_bits(poisoned[0].out, poisoned[1].out, "poisoned out");
        expect_same_bits(poisoned[0].state, poisoned[1].state, "poisoned state");

        // The clean run is a real attention result, so bit-identity is not the identity of two wrong answers.
        const ref::Result want = ref::attention(clean_in.params, clean_in.q.t, clean_in.k.t, clean_in.v.t,
                                                clean_in.with_mask ? &clean_in.mask.t : nullptr, nullptr);
        EXPECT_LT(ref::rel_error(want, clean[0].out.t), 1e-5);
    }
}

class NanIsolation : public testing::TestWithParam<fst_type> {};

TEST_P(NanIsolation, PoisonedQueryRowStaysInItsRow) {
    const Inputs clean(GetParam(), Shape{});
    for (Poison p : {Poison::nan, Poison::inf}) {
        SCOPED_TRACE(name(p));
        Inputs poisoned = clean;
        poisoned.poison_q(5, 1, 2, 1, p); // element 5 of query row 1, head 2, sequence 1
        check(clean, poisoned, [](int64_t h, int64_t r, int64_t s) { return h == 2 && r == 1 && s == 1; });
    }
}

TEST_P(NanIsolation, PoisonedKvHeadReachesOnlyTheHeadsThatReadIt) {
    const Shape sh;
    const Inputs clean(GetParam(), sh);
    const int64_t group = sh.n_head / sh.n_head_kv;
    for (bool in_v : {false, true})
        for (Poison p : {Poison::nan, Poison::inf}) {
            SCOPED_TRACE(std::string(in_v ? "V " : "K ") + name(p));
            Inputs poisoned = clean;
            poison_kv(in_v ? poisoned.v : poisoned.k, 7, 13, 1, 0, p); // key 13 of KV head 1, KV sequence 0
            check(clean, poisoned,
                  [&](int64_t h, int64_t, int64_t s) { return h / group == 1 && s % sh.n_seq_kv == 0; });
        }
}

TEST_P(NanIsolation, PoisonedKeyHiddenByTheMaskTensorChangesNothingForThoseRows) {
    Inputs clean(GetParam(), Shape{});
    const int64_t j = 20;
    clean.set_mask(j, 0, 0, kF16MinusInf); // rows 0 and 2 cannot see key j; row 1 can
    clean.set_mask(j, 1, 0, 0);
    clean.set_mask(j, 2, 0, kF16MinusInf);
    for (Poison p : {Poison::nan, Poison::inf}) {
        SCOPED_TRACE(name(p));
        Inputs poisoned = clean;
        for (int64_t sk = 0; sk < clean.sh.n_seq_kv; ++sk) poison_key(poisoned, j, sk, p);
        check(clean, poisoned, [](int64_t, int64_t r, int64_t) { return r == 1; });
    }
}

TEST_P(NanIsolation, PoisonedKeyHiddenByTheCausalMaskChangesNothingForThoseRows) {
    Inputs clean(GetParam(), Shape{});
    clean.with_mask = false;
    clean.params.virtual_mask = FST_MASK_CAUSAL;
    clean.params.q_pos0 = clean.sh.n_kv - clean.sh.n_q; // the last key is visible to the last row only
    for (Poison p : {Poison::nan, Poison::inf}) {
        SCOPED_TRACE(name(p));
        Inputs poisoned = clean;
        for (int64_t sk = 0; sk < clean.sh.n_seq_kv; ++sk) poison_key(poisoned, clean.sh.n_kv - 1, sk, p);
        check(clean, poisoned, [&](int64_t, int64_t r, int64_t) { return r == clean.sh.n_q - 1; });
    }
}

TEST_P(NanIsolation, PoisonedKeyOutsideTheSlidingWindowChangesNothingForThoseRows) {
    Inputs clean(GetParam(), Shape{});
    clean.with_mask = false;
    clean.params.virtual_mask = FST_MASK_SLIDING_WINDOW;
    clean.params.window = 10;
    clean.params.q_pos0 = clean.sh.n_kv - clean.sh.n_q; // rows at 77, 78, 79 see keys (pos - 10, pos]
    const int64_t j = clean.params.q_pos0 - 9;          // inside row 0's window only
    for (Poison p : {Poison::nan, Poison::inf}) {
        SCOPED_TRACE(name(p));
        Inputs poisoned = clean;
        for (int64_t sk = 0; sk < clean.sh.n_seq_kv; ++sk) poison_key(poisoned, j, sk, p);
        check(clean, poisoned, [](int64_t, int64_t r, int64_t) { return r == 0; });
    }
}

TEST_P(NanIsolation, PoisonedSequenceReachesOnlyItsOwnRows) {
    const Shape sh;
    const Inputs clean(GetParam(), sh);
    for (bool in_v : {false, true})
        for (Poison p : {Poison::nan, Poison::inf}) {
            SCOPED_TRACE(std::string(in_v ? "V " : "K ") + name(p));
            Inputs poisoned = clean;
            for (int64_t hk = 0; hk < sh.n_head_kv; ++hk) poison_kv(in_v ? poisoned.v : poisoned.k, 0, 3, hk, 1, p);
            check(clean, poisoned, [&](int64_t, int64_t, int64_t s) { return s % sh.n_seq_kv == 1; });
        }
}

// One decode row over a long KV range, where a kernel may split the range across threads: a key hidden from
// head 0 (per-head mask) but visible to head 1 must not leak into head 0 through the partial merge.
TEST_P(NanIsolation, PoisonedKeyHiddenFromOneHeadInALongDecode) {
    const Shape sh{.n_q = 1, .n_kv = 1024, .n_head = 2, .n_head_kv = 1, .n_seq = 1, .n_seq_kv = 1, .m2 = 2};
    Inputs clean(GetParam(), sh);
    const int64_t j = 700;
    clean.set_mask(j, 0, 0, kF16MinusInf);
    clean.set_mask(j, 0, 1, 0);
    for (Poison p : {Poison::nan, Poison::inf}) {
        SCOPED_TRACE(name(p));
        Inputs poisoned = clean;
        poison_key(poisoned, j, 0, p);
        check(clean, poisoned, [](int64_t h, int64_t, int64_t) { return h == 1; });
    }
}

INSTANTIATE_TEST_SUITE_P(KvTypes, NanIsolation,
                         testing::Values(FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0),
                         [](const testing::TestParamInfo<fst_type> &info) {
                             return std::string(fst_type_name(info.param));
                         });

} // namespace
