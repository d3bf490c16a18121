// The kernels' building blocks that the attention tests cannot isolate: the vectorized e^x and tanh (logit softcap)
// of every ISA this CPU has, against double precision. Their maximum errors are the figures the kernel headers document.
#include "kernels/kernel.h"
#include "reference/reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdio>
#include <string>
#include <algorithm>
#include <vector>

namespace {

struct Level {
    fst_isa isa;
    const fst::kernels::KernelTable *table;
};

std::vector<Level> levels_of_this_cpu() {
    std::vector<Level> out;
    for (int level = FST_ISA_PORTABLE; level <= FST_ISA_AVX512; ++level) {
        const auto &t = fst::kernels::select_kernels(fst_isa(level));
        if (t.isa == fst_isa(level)) out.push_back({fst_isa(level), &t});
    }
    return out;
}

// Documented bound: 1 ulp of float (2^-23 relative) over the range the kernels use, e^x for x in [-87, 10]
// (measured on an AVX-512 Xeon: 0.60 ulp for the AVX2 and AVX-512 versions, 0.50 for libm).
constexpr double kMaxUlp = 1.0;

// Every level's array function `fn` (a member of the kernel table) against the double-precision `ref` over x: the
// largest relative error (absolute where the exact value is 0), printed, and checked against max_ulp ulp of float.
template <class Ref>
void check_relative_error(const char *what, void (*const fst::kernels::KernelTable::*fn)(const float *, float *, int64_t),
                          const std::vector<float> &x, Ref ref, double max_ulp) {
    std::vector<float> y(x.size());
    for (const Level &l : levels_of_this_cpu()) {
        (l.table->*fn)(x.data(), y.data(), int64_t(x.size()));
        double worst = 0.0, at = 0.0;
        for (size_t i = 0; i < x.size(); ++i) {
            const double want = ref(double(x[i]));
            const double err = want == 0.0 ? std::fabs(double(y[i])) : std::fabs(double(y[i]) - want) / std::fabs(want);
            if (err > worst) worst = err, at = x[i];
        }
        std::printf("%s %-8s max relative error %.3g (%.2f ulp) at x = %.6g\n", what, fst_isa_name(l.isa), worst,
                    worst * 8388608.0, at);
        EXPECT_LE(worst * 8388608.0, max_ulp) << what << " " << fst_isa_name(l.isa);
    }
}

TEST(KernelExp, RelativeErrorOverTheUsedRangeIsWithinOneUlp) {
    std::vector<float> x;
    for (double v = -87.0; v <= 10.0; v += 1.0 / 4096.0) x.push_back(float(v));
    check_relative_error("exp", &fst::kernels::KernelTable::exp_array, x, [](double v) { return std::exp(v); }, kMaxUlp);
}

TEST(KernelExp, EdgesAreExact) {
    const float inf = INFINITY;
    std::vector<float> x = {-inf, -200.0f, -104.0f, 0.0f, NAN}, y(x.size());
    for (const Level &l : levels_of_this_cpu()) {
        l.table->exp_array(x.data(), y.data(), int64_t(x.size()));
        EXPECT_EQ(y[0], 0.0f) << fst_isa_name(l.isa) << ": e^-inf";
        EXPECT_EQ(y[1], 0.0f) << fst_isa_name(l.isa) << ": e^-200 underflows to 0";
        EXPECT_LT(y[2], 1e-37f) << fst_isa_name(l.isa);
        EXPECT_EQ(y[3], 1.0f) << fst_isa_name(l.isa) << ": e^0";
        EXPECT_TRUE(std::isnan(y[4])) << fst_isa_name(l.isa) << ": NaN in, NaN out";
    }
}

// The logit softcap's tanh (kernels/simd/attend_simd.h, tanh_v), against double tanh over the arguments softcapping
// meets: scale * x / softcap for logits x up to a few times the cap, and small arguments down to 1e-30. Documented
// bound: 2 ulp relative (measured on the Zen 5 of docs/PERFORMANCE.md: 1.12 ulp for AVX2 and AVX-512, near
// |x| = 8.4; glibc's tanhf, the portable kernel's, 1.28).
constexpr double kTanhMaxUlp = 2.0;

TEST(KernelTanh, RelativeErrorIsWithinTwoUlp) {
    std::vector<float> x;
    for (double v = -12.0; v <= 12.0; v += 1.0 / 8192.0) x.push_back(float(v));
    for (double v = 1e-30; v < 1.0; v *= 1.01) x.push_back(float(v)), x.push_back(float(-v));
    check_relative_error("tanh", &fst::kernels::KernelTable::tanh_array, x, [](double v) { return std::tanh(v); }, kTanhMaxUlp);
}

TEST(KernelTanh, EdgesAreExact) {
    const float inf = INFINITY;
    std::vector<float> x = {-inf, -100.0f, -0.0f, 0.0f, 100.0f, inf, NAN}, y(x.size());
    for (const Level &l : levels_of_this_cpu()) {
        l.table->tanh_array(x.data(), y.data(), int64_t(x.size()));
        EXPECT_EQ(y[0], -1.0f) << fst_isa_name(l.isa) << ": tanh(-inf)";
        EXPECT_EQ(y[1], -1.0f) << fst_isa_name(l.isa);
        EXPECT_EQ(y[2], 0.0f) << fst_isa_name(l.isa);
        EXPECT_TRUE(std::signbit(y[2])) << fst_isa_name(l.isa) << ": tanh(-0) is -0";
        EXPECT_EQ(y[3], 0.0f) << fst_isa_name(l.isa);
        EXPECT_FALSE(std::signbit(y[3])) << fst_isa_name(l.isa);
        EXPECT_EQ(y[4], 1.0f) << fst_isa_name(l.isa);
        EXPECT_EQ(y[5], 1.0f) << fst_isa_name(l.isa) << ": tanh(inf)";
        EXPECT_TRUE(std::isnan(y[6])) << fst_isa_name(l.isa) << ": NaN in, NaN out";
    }
}

// Every F16 bit pattern, at an odd offset and length (vector body and tail), against the reference's decoder.
TEST(KernelF16Row, EveryValueWidensExactly) {
    std::vector<unsigned char> src(1 + 2 * 65536 + 2 * 7);
    for (uint32_t i = 0; i < 65536 + 7; ++i) {
        const uint16_t h = uint16_t(i);
        std::memcpy(src.data() + 1 + 2 * i, &h, 2);
    }
    const int64_t n = 65536 + 7;
    for (const Level &l : levels_of_this_cpu()) {
        std::vector<float> y(size_t(n), 1.0f);
        l.table->f16_row_to_f32(src.data() + 1, y.data(), n);
        for (int64_t i = 0; i < n; ++i) {
            const double expected = ref::f16_to_double(uint16_t(i));
            if (std::isnan(expected)) {
                ASSERT_TRUE(std::isnan(y[size_t(i)])) << fst_isa_name(l.isa) << " bits " << i;
                continue;
            }
            ASSERT_EQ(double(y[size_t(i)]), expected) << fst_isa_name(l.isa) << " bits " << i;
            ASSERT_EQ(std::signbit(y[size_t(i)]), std::signbit(expected)) << fst_isa_name(l.isa) << " bits " << i;
        }
    }
}

// The O update of ⊕ (combine_rows) and a partial's normalization (scale_row) must round exactly as the scalar
// formulas do (two products and a sum, never an FMA): merges inside a call and fst_state_merge then agree bit for
// bit. Lengths from 1 to 40 cover the vector bodies and tails; the values include zeros of both signs, subnormals,
// infinities and NaN.
uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || float_bits(a) == float_bits(b); }

TEST(KernelRowOps, CombineAndScaleRoundAsWritten) {
    const float specials[] = {0.0f, -0.0f, 1e-40f, -3e-39f, INFINITY, -INFINITY, NAN, 3.4e38f, 1.0f, -2.5f};
    uint32_t state = 12345;
    auto next = [&] {
        state = state * 1664525u + 1013904223u;
        const uint32_t r = state >> 8;
        return r % 16 == 0 ? specials[r % 10] : (float(r % 200001) - 100000.0f) / 777.0f;
    };
    for (const Level &l : levels_of_this_cpu())
        for (int64_t n = 1; n <= 40; ++n)
            for (int trial = 0; trial < 4; ++trial) {
                std::vector<float> y(static_cast<size_t>(n)), x(static_cast<size_t>(n)), out(static_cast<size_t>(n));
                for (int64_t i = 0; i < n; ++i) y[size_t(i)] = next(), x[size_t(i)] = next();
                const float a = trial == 3 ? 0.0f : next() / 64.0f, b = next() / 64.0f;
                std::vector<float> combined = y;
                l.table->combine_rows(combined.data(), a, x.data(), b, n);
                l.table->scale_row(x.data(), a, out.data(), n);
                for (int64_t i = 0; i < n; ++i) {
                    volatile float ay = a * y[size_t(i)], bx = b * x[size_t(i)]; // rounded one at a time
                    const float want = ay + bx;
                    ASSERT_TRUE(same_float(combined[size_t(i)], want))
                        << fst_isa_name(l.isa) << " combine_rows n " << n << " i " << i << ": " << combined[size_t(i)] << " vs " << want;
                    const float want_scaled = a * x[size_t(i)];
                    ASSERT_TRUE(same_float(out[size_t(i)], want_scaled))
                        << fst_isa_name(l.isa) << " scale_row n " << n << " i " << i;
                }
            }
}

TEST(KernelDispatch, ForcingALowerLevelIsHonoured) {
    EXPECT_EQ(fst::kernels::select_kernels(FST_ISA_PORTABLE).isa, FST_ISA_PORTABLE);
    const fst_isa best = fst_isa_best();
    EXPECT_LE(int(fst::kernels::select_kernels(FST_ISA_AVX512).isa), int(best));
    EXPECT_EQ(fst::kernels::select_kernels(FST_ISA_AUTO).isa, best);
}

} // namespace

namespace {

// Head sizes that are not whole AVX-512 vectors (D = 40: 2.5 vectors of 16) run on the best level that handles them,
// and still match the reference.
TEST(KernelDispatch, OddHeadSizesStillMatchTheReference) {
    for (int64_t D : {40, 24, 8})
    for (int64_t nq : {20, 32}) { // rows per tile: the row groups' path (20), the rows-as-lanes path (32)
        SCOPED_TRACE(D);
        SCOPED_TRACE(nq);
        const int64_t nkv = 300, H = 2;
        std::vector<float> q(size_t(D * nq * H)), k(size_t(D * nkv * H)), v(size_t(D * nkv * H));
        for (size_t i = 0; i < q.size(); ++i) q[i] = float((i * 7919) % 97) / 97.0f - 0.5f;
        for (size_t i = 0; i < k.size(); ++i) k[i] = float((i * 104729) % 89) / 89.0f - 0.5f;
        for (size_t i = 0; i < v.size(); ++i) v[i] = float((i * 1299709) % 83) / 83.0f - 0.5f;
        std::vector<float> st(size_t(2 * H * nq)), out(size_t(D * H * nq));
        fst_tensor tq = fst_tensor_contiguous(FST_TYPE_F32, D, nq, H, 1, q.data());
        fst_tensor tk = fst_tensor_contiguous(FST_TYPE_F32, D, nkv, H, 1, k.data());
        fst_tensor tv = fst_tensor_contiguous(FST_TYPE_F32, D, nkv, H, 1, v.data());
        fst_tensor ts = fst_tensor_contiguous(FST_TYPE_F32, 2, H, nq, 1, st.data());
        fst_tensor to = fst_tensor_contiguous(FST_TYPE_F32, D, H, nq, 1, out.data());
        fst_attn_params p = fst_attn_default_params();
        p.scale = 0.3f;
        p.virtual_mask = FST_MASK_CAUSAL;
        p.q_pos0 = nkv - nq;
        ASSERT_EQ(fst_state_init(&ts, &to), FST_OK);
        ASSERT_EQ(fst_attn_with_state(&p, &tq, &tk, &tv, nullptr, nullptr, &ts, &to), FST_OK) << fst_last_error();
        const ref::Result want = ref::attention(p, tq, tk, tv, nullptr, nullptr);
        EXPECT_LE(ref::rel_error(want, to), 1e-5);
    }
}

} // namespace

namespace {

// Every kernel converts K and V exactly as stored (SPEC section 4), through the straight-line path of whole 64-key
// blocks (n_kv = 64) and the per-key path (n_kv = 32). With every key the same and a one-hot query, each logit is
// one stored K element times 1, so the state's M must equal it bit for bit; every weight is e^0 = 1, so S = n_kv;
// and with one non-zero V row, the output is that row / n_kv, exact for a power of two.
TEST(KernelDequantization, StoredValuesReachLogitsAndOutputExactly) {
    const int64_t D = 128, H = 4; // 4 query heads on 1 KV head: one GQA group, the decode path
    for (fst_type type : {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0})
        for (int64_t nkv : {64, 32}) {
            SCOPED_TRACE(std::string(fst_type_name(type)) + " n_kv " + std::to_string(nkv));
            const size_t row = fst_type_size(type) * size_t(D / fst_type_block_size(type));
            std::vector<float> src(static_cast<size_t>(D)), vsrc(static_cast<size_t>(D)), zeros(static_cast<size_t>(D), 0.0f);
            for (int64_t i = 0; i < D; ++i) {
                src[size_t(i)] = float((i * 7919) % 257) / 64.0f - 2.0f; // every Q4_0 nibble occurs
                vsrc[size_t(i)] = float((i * 104729) % 251) / 50.0f - 2.5f;
            }
            std::vector<unsigned char> k(row * size_t(nkv)), v(row * size_t(nkv));
            const int64_t hot = nkv / 2 + 5; // the one non-zero V row
            for (int64_t j = 0; j < nkv; ++j) {
                ASSERT_EQ(fst_quantize_row(type, src.data(), k.data() + row * size_t(j), D), FST_OK);
                ASSERT_EQ(fst_quantize_row(type, j == hot ? vsrc.data() : zeros.data(), v.data() + row * size_t(j), D), FST_OK);
            }
            fst_tensor tk = fst_tensor_contiguous(type, D, nkv, 1, 1, k.data());
            fst_tensor tv = fst_tensor_contiguous(type, D, nkv, 1, 1, v.data());
            std::vector<float> q(size_t(D * H)), st(size_t(2 * H)), out(size_t(D * H));
            fst_tensor tq = fst_tensor_contiguous(FST_TYPE_F32, D, 1, H, 1, q.data());
            fst_tensor ts = fst_tensor_contiguous(FST_TYPE_F32, 2, H, 1, 1, st.data());
            fst_tensor to = fst_tensor_contiguous(FST_TYPE_F32, D, H, 1, 1, out.data());
            fst_attn_params p = fst_attn_default_params();
            for (int64_t d0 = 0; d0 < D; d0 += H) {
                std::fill(q.begin(), q.end(), 0.0f);
                for (int64_t h = 0; h < H; ++h) q[size_t(h * D + d0 + h)] = 1.0f; // head h reads element d0 + h
                ASSERT_EQ(fst_state_init(&ts, &to), FST_OK);
                ASSERT_EQ(fst_attn_with_state(&p, &tq, &tk, &tv, nullptr, nullptr, &ts, &to), FST_OK) << fst_last_error();
                for (int64_t h = 0; h < H; ++h) {
                    ASSERT_EQ(st[size_t(2 * h)], float(ref::read(tk, d0 + h, 0))) << "logit of element " << d0 + h;
                    ASSERT_EQ(st[size_t(2 * h + 1)], float(nkv));
                    for (int64_t c = 0; c < D; ++c)
                        ASSERT_EQ(out[size_t(h * D + c)], float(ref::read(tv, c, hot) / double(nkv))) << "output " << c;
                }
            }
        }
}

} // namespace
