// The decode kernel's online softmax over a 64-key block (scale, softcap, bias, the rows' running max and sum, the
// rescale factor of their earlier sums), the vector tanh of the logit softcap, and the keys a bias row hides.
// Part of the SIMD kernel (attend_simd.h).
#pragma once

#include "kernels/simd/rows.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace fst::kernels::simd {
// Internal linkage: each ISA's file gets its own copies (see rows.h).
namespace {

// tanh for the logit softcap, from the ISA's exp: sign(y) * t(|y|) with t(u) = (e^2u - 1) / (e^2u + 1) for u >= 0.625
// (e^2u - 1 is exact there) and, below, Taylor's odd polynomial to u^19 (truncation < 1e-8 relative: the exp form
// would cancel). Maximum relative error against double tanh: 1.12 ulp measured, 2 ulp tested (tests/test_kernels.cpp).
// NaN in, NaN out; +-inf give +-1 (exp clamps its argument).
template <class Vec> inline typename Vec::V tanh_v(typename Vec::V y) {
    using V = typename Vec::V;
    static constexpr float kOdd[9] = {-1.0f / 3, 2.0f / 15, -17.0f / 315, 62.0f / 2835, -1382.0f / 155925,
                                       21844.0f / 6081075, -929569.0f / 638512875, 6404582.0f / 10854718875.0f,
                                       -443861162.0f / 1856156927625.0f}; // u^3 .. u^19
    const V u = Vec::abs(y), u2 = Vec::mul(u, u);
    V p = Vec::set1(kOdd[8]);
    for (int i = 7; i >= 0; --i) p = Vec::fma(p, u2, Vec::set1(kOdd[i]));
    const V small = Vec::fma(Vec::mul(p, u2), u, u);
    const V e = Vec::exp(Vec::add(u, u)), one = Vec::set1(1.0f);
    const V large = Vec::div(Vec::sub(e, one), Vec::add(e, one));
    return Vec::with_sign_of(Vec::blend(Vec::less_lanes(u, Vec::set1(0.625f)), large, small), y);
}

// A vector of raw logits x as SPEC section 1 caps them: softcap * tanh(scale * x / softcap).
template <class Vec>
inline typename Vec::V softcapped(typename Vec::V x, typename Vec::V scale, typename Vec::V cap) {
    return Vec::mul(cap, tanh_v<Vec>(Vec::div(Vec::mul(scale, x), cap)));
}

// Online softmax of one block of nb keys, one rescale per row: vector max, exp and sum over the vectors that hold its
// keys (a short segment's block: only those). Turns the logits w into weights in place and sets alpha (the factor for
// the row's earlier sum); a row whose visible logits are all -inf drops out of vis.
template <class Vec, int NR>
void block_softmax(const ChunkArgs &a, int64_t r0, int64_t j0, int nb, KeyBits *vis, float w[][kBlockKeys], float *alpha) {
    using V = typename Vec::V;
    constexpr float neg_inf = -std::numeric_limits<float>::infinity();
    constexpr int NV = kBlockKeys / Vec::W;
    const int nv = (nb + Vec::W - 1) / Vec::W; // lanes past nb are hidden (vis), so the vectors past nv add nothing
    constexpr uint32_t lane_bits = (uint32_t(1) << Vec::W) - 1;
    float *m = a.m + r0, *s = a.s + r0;
    const V neg_inf_v = Vec::set1(neg_inf), zero_v = Vec::zero(), scale_v = Vec::set1(a.scale), cap_v = Vec::set1(a.softcap);
    // The rows' steps interleaved (all maxima, then all weights): each row's chain of max, exp and sum is long, and
    // the rows are independent. Per row the arithmetic is the same as one row at a time.
    V xs[NR][NV];
    float block_max[NR];
    for (int r = 0; r < NR; ++r) {
        alpha[r] = 1.0f;
        block_max[r] = neg_inf;
        if (vis[r] == 0) continue;
        const float *bias = a.bias ? a.bias + (r0 + r) * a.bias_stride + j0 : nullptr;
        V mx = neg_inf_v;
        for (int k = 0; k < nv; ++k) {
            V xv = Vec::load(&w[r][k * Vec::W]);
            xv = a.softcap > 0.0f ? softcapped<Vec>(xv, scale_v, cap_v) : Vec::mul(scale_v, xv);
            if (bias) xv = Vec::add(xv, Vec::load(bias + k * Vec::W)); // lanes past n_keys are masked below
            xs[r][k] = Vec::blend(uint32_t(vis[r] >> (k * Vec::W)) & lane_bits, neg_inf_v, xv);
            mx = Vec::max(mx, xs[r][k]);
        }
        block_max[r] = Vec::reduce_max(mx);
        if (block_max[r] == neg_inf) vis[r] = 0; // visible keys whose logit is -inf: nothing to add
    }
    for (int r = 0; r < NR; ++r) {
        if (vis[r] == 0) continue;
        const float m_new = maxf(m[r], block_max[r]);
        alpha[r] = s[r] != 0.0f ? std::exp(m[r] - m_new) : 0.0f;
        m[r] = m_new;
    }
    for (int r = 0; r < NR; ++r) {
        if (vis[r] == 0) continue;
        const V neg_m = Vec::set1(-m[r]);
        V sum = zero_v;
        for (int k = 0; k < nv; ++k) {
            const V pv = Vec::blend(uint32_t(vis[r] >> (k * Vec::W)) & lane_bits, zero_v, Vec::exp(Vec::add(xs[r][k], neg_m)));
            Vec::store(&w[r][k * Vec::W], pv);
            sum = Vec::add(sum, pv);
        }
        s[r] = s[r] * alpha[r] + Vec::reduce_add(sum);
    }
}

// The keys among `bits` (all below n) whose bias is -inf, a vector of keys at a time (a key at a time, this was a
// quarter of the kernel's time in decode with a mask: a chain of 64 dependent steps per row and block).
template <class Vec> KeyBits neg_inf_keys(const float *bias, KeyBits bits, int64_t n) {
    constexpr KeyBits lanes = (KeyBits(1) << Vec::W) - 1;
    KeyBits hidden = 0;
    int64_t j = 0;
    for (; j + Vec::W <= n; j += Vec::W)
        if ((bits >> j) & lanes) hidden |= KeyBits(Vec::neg_inf_lanes(bias + j)) << j;
    for (; j < n; ++j)
        if (((bits >> j) & 1u) && bias[j] == -std::numeric_limits<float>::infinity()) hidden |= KeyBits(1) << j;
    return hidden & bits;
}

} // namespace
} // namespace fst::kernels::simd
