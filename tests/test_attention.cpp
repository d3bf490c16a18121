// One call of fst_attn_with_state from the empty state (ordinary flash attention) against the double reference,
// on random problems: every K/V type pair, every feature, logits up to 50, and a long KV range. SPEC section 4:
// relative error <= 1e-5; the state (M, S) must match the reference's too.
#include "support/cases.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

using namespace fst_test;

namespace {

// SPEC section 4 for out (relative to max |ref| over the whole output); also applied to M and, per row, to S. S is
// the closest to the F32 floor: every logit carries ~6e-8 * |x| of rounding, and at logits of 50 the measured S
// error reaches ~8.5e-6 (AVX2 kernels), with out below 2e-6.
const double tolerance = 1e-5;

struct Errors {
    double out = 0, m = 0, s = 0;
    void add(const Errors &e) {
        out = std::max(out, e.out);
        m = std::max(m, e.m);
        s = std::max(s, e.s);
    }
};

// Init, one call over the KV range g (with the problem's sinks), compare out and state with the reference.
Errors run_range(const Problem &pb, const Segment &g) {
    Buffer state = pb.make_state(), out = pb.make_out();
    EXPECT_EQ(fst_state_init(&state.t, &out.t), FST_OK) << fst_last_error();
    fst_attn_params p = g.params();
    fst_tensor q = pb.q();
    EXPECT_EQ(fst_attn_with_state(&p, &q, &g.k, &g.v, g.mask_ptr(), pb.sinks(), &state.t, &out.t), FST_OK)
        << fst_last_error();
    ref::Result r = pb.reference(g, true);
    StateError se = state_error(state.t, r);
    return Errors{ref::rel_error(r, out.t), se.m, se.s};
}

Errors run_problem(const Spec &spec, uint32_t seed) {
    Problem pb(spec, seed);
    Errors e = run_range(pb, pb.segment(0, spec.n_kv));
    EXPECT_LE(e.out, tolerance) << "seed " << seed << ": " << describe(pb.spec);
    EXPECT_LE(e.m, tolerance) << "seed " << seed << ": " << describe(pb.spec);
    EXPECT_LE(e.s, tolerance) << "seed " << seed << ": " << describe(pb.spec);
    return e;
}

void print(const std::string &what, const Errors &e, int n) {
    std::printf("  %-28s out %.3g  M %.3g  S %.3g  (%d problems)\n", what.c_str(), e.out, e.m, e.s, n);
}

} // namespace

TEST(Attention, EveryKvTypePair) {
    const int per_pair = 8;
    Errors overall;
    uint32_t seed = 1000;
    for (fst_type kt : kv_types())
        for (fst_type vt : kv_types()) {
            Errors pair;
            for (int i = 0; i < per_pair; ++i) {
                std::mt19937 rng(++seed);
                pair.add(run_problem(random_spec(rng, kt, vt), seed));
            }
            print(std::string("k=") + fst_type_name(kt) + " v=" + fst_type_name(vt), pair, per_pair);
            overall.add(pair);
        }
    print("overall", overall, per_pair * 25);
}

// Each feature forced on, over random K/V types, so that coverage does not depend on the dice.
TEST(Attention, EveryFeature) {
    auto with_mask = [](Spec &s, std::mt19937 &rng) {
        if (s.has_mask) return;
        s.has_mask = true;
        s.mask_type = rng() % 2 ? FST_TYPE_F16 : FST_TYPE_F32;
        s.mask_rows = s.n_q;
    };
    auto with_mask_on_lanes = [&](Spec &s, std::mt19937 &rng) { // 40 query rows, one KV head, 30 % of the mask -inf
        with_mask(s, rng);
        s.n_q = s.mask_rows = 40;
        s.n_head = s.n_head_kv = 1;
        s.n_kv = 200;
        s.mask_inf_fraction = 0.3;
    };
    auto with_virtual = [](Spec &s, fst_virtual_mask kind, std::mt19937 &rng) {
        s.virtual_mask = kind;
        s.window = 1 + int64_t(rng() % uint32_t(std::max<int64_t>(s.n_kv, 1) + 2));
        s.kv_pos0 = int64_t(rng() % 40);
        s.q_pos0 = s.kv_pos0 + s.n_kv - s.n_q + int64_t(rng() % 10) - 6;
    };
    struct Feature {
        std::string name;
        std::function<void(Spec &, std::mt19937 &)> apply;
    };
    std::vector<Feature> features = {
        {"alibi, 12 heads", [&](Spec &s, std::mt19937 &rng) {
             with_mask(s, rng);
             s.n_head = 12;
             s.n_head_kv = rng() % 2 ? 12 : 3;
             s.max_bias = 8;
         }},
        {"alibi, 6 heads", [&](Spec &s, std::mt19937 &rng) {
             with_mask(s, rng);
             s.n_head = 6;
             s.n_head_kv = 6;
             s.m2 = 6;
             s.max_bias = 3.5f;
         }},
        {"softcap", [](Spec &s, std::mt19937 &rng) {
             s.softcap = rng() % 2 ? 20.0f : 50.0f;
             s.logit_max = 50;
         }},
        {"sinks", [](Spec &s, std::mt19937 &) { s.has_sinks = true; }},
        {"causal", [&](Spec &s, std::mt19937 &rng) { with_virtual(s, FST_MASK_CAUSAL, rng); }},
        {"sliding window", [&](Spec &s, std::mt19937 &rng) { with_virtual(s, FST_MASK_SLIDING_WINDOW, rng); }},
        {"position tensors", [&](Spec &s, std::mt19937 &rng) {
             with_virtual(s, rng() % 2 ? FST_MASK_CAUSAL : FST_MASK_SLIDING_WINDOW, rng);
             s.n_seq_kv = 1;
             s.n_seq = 2;
             s.q_pos_tensor = s.kv_pos_tensor = true;
             s.pos_columns = rng() % 2 ? 1 : 2;
         }},
        {"virtual mask and mask", [&](Spec &s, std::mt19937 &rng) {
             with_mask(s, rng);
             with_virtual(s, FST_MASK_SLIDING_WINDOW, rng);
             s.kv_pos_tensor = true;
         }},
        {"permuted K and V views", [](Spec &s, std::mt19937 &) { s.permute_k = s.permute_v = true; }},
        {"padded strides", [](Spec &s, std::mt19937 &) { s.padded = true; }},
        {"mask broadcast, extra rows", [&](Spec &s, std::mt19937 &rng) {
             with_mask(s, rng);
             s.n_head = 4;
             s.n_head_kv = 2;
             s.n_seq_kv = 1;
             s.n_seq = 2;
             s.m2 = rng() % 2 ? 1 : 4;
             s.m3 = rng() % 2 ? 1 : 2;
             s.mask_rows = s.n_q + 3;
         }},
        {"random -inf, fully masked", [&](Spec &s, std::mt19937 &rng) {
             with_mask(s, rng);
             s.mask_inf_fraction = 0.5;
             s.n_fully_masked_rows = 2;
         }},
        // 40 rows of one KV head: the kernels' rows-as-lanes path, whose mask values (non-zero everywhere here, as
        // llama.cpp's ALiBi mask) are added a 16 x 16 tile at a time, and whose softcap is vectorized.
        {"mask and ALiBi, rows as lanes", [&](Spec &s, std::mt19937 &rng) {
             with_mask_on_lanes(s, rng);
             s.n_head = 2;
             s.max_bias = 8;
         }},
        {"softcap and mask, rows as lanes", [&](Spec &s, std::mt19937 &rng) {
             with_mask_on_lanes(s, rng);
             s.softcap = 30;
             s.logit_max = 50;
         }},
        {"KV broadcast over sequences", [](Spec &s, std::mt19937 &) {
             s.n_seq_kv = 2;
             s.n_seq = 4;
         }},
        {"q f16 / bf16", [](Spec &s, std::mt19937 &rng) { s.q_type = rng() % 2 ? FST_TYPE_F16 : FST_TYPE_BF16; }},
        {"D != DV", [](Spec &s, std::mt19937 &) {
             s.D = 64;
             s.DV = 96;
         }},
        {"n_kv == 0", [](Spec &s, std::mt19937 &rng) {
             s.n_kv = 0;
             s.has_sinks = rng() % 2;
         }},
    };
    const int per_feature = 10;
    Errors overall;
    uint32_t seed = 50000;
    for (const Feature &f : features) {
        Errors fe;
        for (int i = 0; i < per_feature; ++i) {
            std::mt19937 rng(++seed);
            const auto &types = kv_types();
            Spec s = random_spec(rng, types[size_t(i) % 5], types[size_t(i * 3 + 1) % 5]);
            f.apply(s, rng);
            make_consistent(s);
            fe.add(run_problem(s, seed));
        }
        print(f.name, fe, per_feature);
        overall.add(fe);
    }
    print("overall", overall, per_feature * int(features.size()));
}

// Logits of magnitude 50: the float logit itself carries ~3e-6 rounding, the bound is still 1e-5.
TEST(Attention, LogitsOfMagnitude50EveryType) {
    uint32_t seed = 90000;
    for (fst_type t : kv_types()) {
        Errors te;
        for (int i = 0; i < 3; ++i) {
            Spec s;
            s.D = s.DV = 128;
            s.n_q = 4;
            s.n_kv = 300;
            s.n_head = 4;
            s.n_head_kv = 2;
            s.k_type = s.v_type = t;
            s.logit_max = 50;
            te.add(run_problem(s, ++seed));
        }
        print(std::string("logits 50, k=v=") + fst_type_name(t), te, 3);
    }
}

// A few query positions per call (speculative decoding: 2-6 rows per query head, 4 query heads per KV head, so 8-24
// rows in row groups of 4) over several 1024-key chunks, with a causal mask and a mask tensor hiding some keys: the
// row groups take each chunk in steps of 256 keys, and each step must continue the state of the one before it.
TEST(Attention, FewQueryPositionsOverSeveralChunks) {
    uint32_t seed = 95000;
    for (fst_type t : kv_types()) {
        Errors te;
        for (int64_t n_q : {2, 3, 6}) {
            Spec s;
            s.D = s.DV = 64;
            s.n_q = n_q;
            s.n_kv = 2300;
            s.n_head = 8;
            s.n_head_kv = 2;
            s.k_type = s.v_type = t;
            s.has_mask = true;
            s.mask_type = FST_TYPE_F16;
            s.mask_inf_fraction = 0.2;
            s.virtual_mask = FST_MASK_CAUSAL;
            s.q_pos0 = s.n_kv - s.n_q - 300; // the last 300 keys are in the future of every row
            s.logit_max = 20;
            te.add(run_problem(s, ++seed));
        }
        print(std::string("few rows, k=v=") + fst_type_name(t), te, 3);
    }
}

// Every width of V from 1 to 17 vectors (AVX-512; 2 to 34 on AVX2): the kernels sum a block's V rows over DV in
// passes of a fixed number of vectors (a whole 128-wide F32/F16/BF16 row on AVX-512), then of 4, then of 1, and
// every vector must be summed once. Row groups of 1, 3 and 4 rows; one query position (every row sees the same keys,
// some hidden by a mask) or two with a causal limit inside the last block (rows see different keys there).
TEST(Attention, EveryValueWidthInPasses) {
    uint32_t seed = 97000;
    for (fst_type t : kv_types()) {
        Errors te;
        int n = 0;
        for (int64_t dv : {16, 48, 64, 112, 128, 144, 192, 208, 256, 272}) {
            if (is_quantized(t) && dv % 32 != 0) continue;
            for (int64_t heads : {1, 3, 4}) {
                Spec s;
                s.D = 64;
                s.DV = dv;
                s.n_q = heads == 3 ? 2 : 1;
                s.n_kv = 200;
                s.n_head = heads;
                s.n_head_kv = 1;
                s.k_type = FST_TYPE_F16;
                s.v_type = t;
                s.has_mask = true;
                s.mask_inf_fraction = 0.2;
                if (s.n_q == 2) {
                    s.virtual_mask = FST_MASK_CAUSAL;
                    s.q_pos0 = s.n_kv - 20;
                }
                te.add(run_problem(s, ++seed));
                ++n;
            }
        }
        print(std::string("every DV, v=") + fst_type_name(t), te, n);
    }
}

// Decode over several 1024-key chunks in one kernel call per span (tile.cpp hands F32/F16/BF16 row groups of up to 4
// rows kSpanChunks chunks at a time when a call has enough KV heads not to cut the keys into pieces for the threads:
// here 32): each chunk must keep its own visibility, bias rows and state. A sliding window hides the first chunk and
// part of the second, the last 300 keys are in the future, and a mask tensor hides 30 % of the keys at random,
// shared by a GQA group's rows or, with ALiBi, per head (a bias row per query row).
TEST(Attention, DecodeSpansOfChunksKeepEachChunksMask) {
    uint32_t seed = 96000;
    for (fst_type t : kv_types()) {
        Errors te;
        for (bool per_head : {false, true}) {
            Spec s = spans_decode_spec(t, 4300, 0.3); // chunks 0-3 in one span, chunk 4 alone
            s.m2 = per_head ? s.n_head : 1;
            s.max_bias = per_head ? 8.0f : 0.0f;
            s.virtual_mask = FST_MASK_SLIDING_WINDOW;
            s.window = 2500;
            s.q_pos0 = s.n_kv - 1 - 300;
            s.logit_max = 20;
            te.add(run_problem(s, ++seed));
        }
        print(std::string("spans of chunks, k=v=") + fst_type_name(t), te, 2);
    }
}

// A decode step over 20000 keys: the error must stay within the bound however long the range (SPEC section 4:
// long ranges need blocked or tree summation). Flat logits with V of mean 1 make every key count. Beyond the
// bound, the error may not grow much past what 200 keys show: one long F32 running sum reaches ~8e-6 at 20000
// keys where a blocked sum stays near 3e-7.
TEST(Attention, LongKvErrorDoesNotGrow) {
    const int64_t lengths[] = {200, 2000, 20000};
    struct Case {
        fst_type kv;
        double logit_max;
    };
    for (Case c : {Case{FST_TYPE_F32, 1}, Case{FST_TYPE_F32, 50}, Case{FST_TYPE_F16, 1}, Case{FST_TYPE_Q8_0, 8}}) {
        Spec s;
        s.D = s.DV = 64;
        s.n_q = 1;
        s.n_kv = 20000;
        s.n_head = s.n_head_kv = 2;
        s.k_type = s.v_type = c.kv;
        s.logit_max = c.logit_max;
        s.v_mean = 1;
        Problem pb(s, 7);
        std::printf("  k=v=%-5s logits %-3g", fst_type_name(c.kv), c.logit_max);
        double short_error = 0;
        for (int64_t n : lengths) {
            Errors e = run_range(pb, pb.segment(0, n));
            std::printf("  n_kv %-6lld out %.3g M %.3g S %.3g;", (long long)n, e.out, e.m, e.s);
            EXPECT_LE(e.out, tolerance) << "n_kv " << n << ": " << describe(s);
            EXPECT_LE(e.m, tolerance) << "n_kv " << n << ": " << describe(s);
            EXPECT_LE(e.s, tolerance) << "n_kv " << n << ": " << describe(s);
            // On out only: S at logits of 50 is dominated by each key's logit rounding, whatever the length.
            if (n == lengths[0]) short_error = e.out;
            EXPECT_LE(e.out, std::max(4 * short_error, 2e-6))
                << "the error grows with the KV length: n_kv " << n << ": " << describe(s);
        }
        std::printf("\n");
    }
}

// A kv_pos tensor holds 32-bit positions while query positions are 64-bit: the bias built from them must compare in
// full range (queries far past or before every key, windows wider than int32, keys at the top of the int32 range).
TEST(Attention, KeyPositionTensorAgainstQueryPositionsBeyondInt32) {
    const int64_t D = 64, n_kv = 150, n_q = 3, H = 2;
    std::vector<float> q(size_t(D * n_q * H)), k(size_t(D * n_kv * H)), v(size_t(D * n_kv * H));
    for (size_t i = 0; i < q.size(); ++i) q[i] = float((i * 7919) % 97) / 97.0f - 0.5f;
    for (size_t i = 0; i < k.size(); ++i) k[i] = float((i * 104729) % 89) / 89.0f - 0.5f;
    for (size_t i = 0; i < v.size(); ++i) v[i] = float((i * 1299709) % 83) / 83.0f - 0.5f;
    struct Case {
        const char *name;
        fst_virtual_mask mask;
        int64_t window, q_pos0, kv_first; // key j has position kv_first + j
        int rows_seeing;                  // query rows that see at least one key
    };
    constexpr int64_t i32_max = 2147483647, far = int64_t(1) << 40;
    const Case cases[] = {
        {"causal, queries far past", FST_MASK_CAUSAL, 0, far, 1000, 3},
        {"causal, queries far before", FST_MASK_CAUSAL, 0, -far, 1000, 0},
        {"window 5, queries far past", FST_MASK_SLIDING_WINDOW, 5, far, 1000, 0},
        {"window wider than int32", FST_MASK_SLIDING_WINDOW, far * 2, far, 1000, 3},
        {"causal, keys at the top of int32", FST_MASK_CAUSAL, 0, i32_max - 50, i32_max - 149, 3},
        {"window 60, queries just past int32", FST_MASK_SLIDING_WINDOW, 60, i32_max + 5, i32_max - 149, 3},
    };
    std::vector<int32_t> pos(static_cast<size_t>(n_kv));
    for (const Case &c : cases) {
        SCOPED_TRACE(c.name);
        for (int64_t j = 0; j < n_kv; ++j) pos[size_t(j)] = int32_t(c.kv_first + j);
        std::vector<float> st(size_t(2 * H * n_q)), out(size_t(D * H * n_q));
        fst_tensor tq = fst_tensor_contiguous(FST_TYPE_F32, D, n_q, H, 1, q.data());
        fst_tensor tk = fst_tensor_contiguous(FST_TYPE_F32, D, n_kv, H, 1, k.data());
        fst_tensor tv = fst_tensor_contiguous(FST_TYPE_F32, D, n_kv, H, 1, v.data());
        fst_tensor tp = fst_tensor_contiguous(FST_TYPE_I32, n_kv, 1, 1, 1, pos.data());
        fst_tensor ts = fst_tensor_contiguous(FST_TYPE_F32, 2, H, n_q, 1, st.data());
        fst_tensor to = fst_tensor_contiguous(FST_TYPE_F32, D, H, n_q, 1, out.data());
        fst_attn_params p = fst_attn_default_params();
        p.scale = 0.3f;
        p.virtual_mask = c.mask;
        p.window = c.window;
        p.q_pos0 = c.q_pos0;
        p.kv_pos = &tp;
        ASSERT_EQ(fst_state_init(&ts, &to), FST_OK);
        ASSERT_EQ(fst_attn_with_state(&p, &tq, &tk, &tv, nullptr, nullptr, &ts, &to), FST_OK) << fst_last_error();
        const ref::Result want = ref::attention(p, tq, tk, tv, nullptr, nullptr);
        EXPECT_LE(ref::rel_error(want, to), 1e-5);
        int rows_seeing = 0;
        for (int64_t r = 0; r < n_q; ++r) rows_seeing += st[size_t(2 * r * H + 1)] > 0.0f; // S of head 0, row r
        EXPECT_EQ(rows_seeing, c.rows_seeing) << "rows with S > 0";
        for (size_t i = 0; i < want.S.size(); ++i) EXPECT_EQ(want.S[i] > 0.0, st[2 * i + 1] > 0.0f) << "row/head " << i;
    }
}
