// The many-rows path of the SIMD kernel (prefill): the tile's query rows are the vector lanes (32 rows = 2 AVX-512
// or 4 AVX2 vectors). Per block of 32 keys, K and V rows are converted to F32 once for all rows, logits come out
// as one vector over rows per key (S^T = K Q^T, register-blocked like a small GEMM, no horizontal sums), the online
// softmax is vertical (max, exp, sum across keys, lane by lane), and O^T += V^T P^T is register-blocked the same way.
// Included by kernels/simd/attend_simd.h only.
#pragma once

#include "kernels/kernel.h"

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

namespace fst::kernels::simd {
namespace {

constexpr int kLaneRows = 32;  // rows per call at most (Plan::kTileRows)
constexpr int kLaneBlock = 32; // keys per block

template <class Vec> size_t lanes_scratch_floats(int64_t D, int64_t DV) {
    const int64_t kv_rows = (kLaneBlock + Vec::kLaneKeys) * D > kLaneBlock * DV ? (kLaneBlock + Vec::kLaneKeys) * D : kLaneBlock * DV;
    return size_t(kLaneRows * D + kv_rows + kLaneBlock * kLaneRows + DV * kLaneRows + 64);
}

template <class Vec, fst_type KT, fst_type VT> void attend_lanes(const ChunkArgs &a) {
    using V = typename Vec::V;
    constexpr int W = Vec::W, RV = kLaneRows / W, KK = Vec::kLaneKeys, CC = Vec::kLaneVals;
    constexpr float neg_inf = -std::numeric_limits<float>::infinity();
    constexpr uint32_t lane_mask = W == 32 ? ~0u : (uint32_t(1) << W) - 1;
    const int64_t D = a.D, DV = a.DV, n = a.n_rows;
    float *qt = a.scratch;                       // [D][32]  Q^T, zero in lanes past n
    float *kf = qt + kLaneRows * D;              // [32 + KK][D] K rows of the block in F32
    float *vf = kf;                              // [32][DV]: V rows, converted once K's are used
    const int64_t kv_rows = (kLaneBlock + KK) * D > kLaneBlock * DV ? (kLaneBlock + KK) * D : kLaneBlock * DV;
    float *pt = kf + kv_rows;                    // [32 keys][32 rows]: logits, then weights
    float *ot = pt + kLaneBlock * kLaneRows;     // [DV][32 rows]: unnormalized O^T
    if (!a.same_q)
        for (int64_t d = 0; d < D; ++d)
            for (int64_t r = 0; r < kLaneRows; ++r) qt[d * kLaneRows + r] = r < n ? a.q[r * D + d] : 0.0f;
    for (int64_t i = 0; i < DV * kLaneRows; ++i) ot[i] = 0.0f;

    V m_v[RV], s_v[RV], alpha_v[RV];
    for (int v = 0; v < RV; ++v) m_v[v] = Vec::set1(neg_inf), s_v[v] = Vec::zero();
    const uint32_t real_rows = n >= 32 ? ~0u : (uint32_t(1) << n) - 1;

    for (int64_t j0 = 0; j0 < a.n_keys; j0 += kLaneBlock) {
        const int nb = int(min64(kLaneBlock, a.n_keys - j0));
        // Which rows see each key.
        uint32_t key_rows[kLaneBlock];
        uint32_t any = 0;
        // A mask whose values are all +0 over this block (the inside of a causal or window mask, given as a tensor)
        // is no mask here: the block then takes the same path as without one.
        bool block_bias = false;
        if (a.bias)
            for (int64_t r = 0; r < n && !block_bias; ++r) {
                uint32_t bits = 0;
                for (int j = 0; j < nb; ++j) bits |= std::bit_cast<uint32_t>(a.bias[r * a.bias_stride + j0 + j]);
                block_bias = bits != 0;
            }
        const bool capped = a.softcap > 0.0f;
        bool all_see_all = !block_bias; // the common case (block inside every row's range, no mask values)
        for (int64_t r = 0; r < n && all_see_all; ++r) all_see_all = a.lo[r] <= j0 && a.hi[r] >= j0 + nb;
        if (all_see_all) {
            for (int j = 0; j < nb; ++j) key_rows[j] = real_rows;
            any = real_rows;
        }
        if (block_bias) {
            // Row by row, the keys in range whose mask value is not -inf (a vector of keys at a time: key by key
            // this was ~5 % of a prefill with ggml's causal mask, mostly on blocks the mask hides from every row),
            // then turned into rows per key.
            for (int j = 0; j < nb; ++j) key_rows[j] = 0;
            for (int64_t r = 0; r < n; ++r) {
                const int64_t lo = max64(a.lo[r] - j0, 0), hi = min64(a.hi[r] - j0, nb);
                KeyBits seen = hi > lo ? low_bits(hi) & ~low_bits(lo) : 0;
                seen &= ~neg_inf_keys<Vec>(a.bias + r * a.bias_stride + j0, seen, hi);
                for (; seen; seen &= seen - 1) key_rows[__builtin_ctzll(seen)] |= uint32_t(1) << r;
            }
            for (int j = 0; j < nb; ++j) any |= key_rows[j];
        }
        for (int j = 0; j < nb && !all_see_all && !block_bias; ++j) {
            uint32_t bits = 0;
            for (int64_t r = 0; r < n; ++r) bits |= uint32_t(j0 + j >= a.lo[r] && j0 + j < a.hi[r]) << r;
            key_rows[j] = bits;
            any |= bits;
        }
        if (any == 0) continue;

        for (int j = 0; j < nb; ++j) {
            const unsigned char *krow = k_row(a, j0 + j);
            for (int64_t c = 0; c < D / W; ++c) Vec::store(kf + j * D + c * W, load_row_chunk<Vec, KT>(krow, c));
        }
        for (int64_t i = nb * D; i < (nb + KK - 1) / KK * KK * D; ++i) kf[i] = 0.0f; // padding keys of a last step

        // S^T = K Q^T, KK keys x RV row vectors of accumulators. Sums run over kDotChunk elements of D at a time and
        // the partial sums are added in memory: a 128-term running sum would lose more than SPEC section 4 allows.
        constexpr int64_t kDotChunk = 16;
        for (int u0 = 0; u0 < nb; u0 += KK) {
            for (int64_t d0 = 0; d0 < D; d0 += kDotChunk) {
                V acc[KK][RV];
                for (int u = 0; u < KK; ++u)
                    for (int v = 0; v < RV; ++v) acc[u][v] = Vec::zero();
                const int64_t d1 = min64(D, d0 + kDotChunk);
                for (int64_t d = d0; d < d1; ++d) {
                    V qv[RV];
                    for (int v = 0; v < RV; ++v) qv[v] = Vec::load(qt + d * kLaneRows + v * W);
                    for (int u = 0; u < KK; ++u) {
                        const V kb = Vec::set1(kf[(u0 + u) * D + d]);
                        for (int v = 0; v < RV; ++v) acc[u][v] = Vec::fma(kb, qv[v], acc[u][v]);
                    }
                }
                for (int u = 0; u < KK && u0 + u < nb; ++u)
                    for (int v = 0; v < RV; ++v) {
                        float *dst = pt + (u0 + u) * kLaneRows + v * W;
                        Vec::store(dst, d0 == 0 ? acc[u][v] : Vec::add(Vec::load(dst), acc[u][v]));
                    }
            }
        }
        // In SPEC order: scale, softcap (vectors), + mask values (per element: the mask is row-major, pt by key).
        if (capped) {
            const V scale_v = Vec::set1(a.scale), cap_v = Vec::set1(a.softcap);
            for (int j = 0; j < nb; ++j)
                for (int v = 0; v < RV; ++v) {
                    float *x = pt + j * kLaneRows + v * W;
                    Vec::store(x, softcapped<Vec>(Vec::load(x), scale_v, cap_v));
                }
        }
        if (block_bias) {
            // W x W tiles of the mask transposed in registers (per element: ~18 % of a prefill with llama.cpp's
            // ALiBi mask, whose values are non-zero everywhere); a block's last keys past a whole tile one by one.
            int j = 0;
            const V scale_v = Vec::set1(a.scale);
            for (; j + W <= nb; j += W)
                for (int v = 0; v < RV && v * W < n; ++v) {
                    V t[W];
                    for (int i = 0; i < W; ++i)
                        t[i] = v * W + i < n ? Vec::load(a.bias + (v * W + i) * a.bias_stride + j0 + j) : Vec::zero();
                    Vec::transpose(t); // t[k]: the mask values of key j + k for rows v * W ..
                    for (int k = 0; k < W; ++k) {
                        float *x = pt + (j + k) * kLaneRows + v * W;
                        Vec::store(x, Vec::add(capped ? Vec::load(x) : Vec::mul(scale_v, Vec::load(x)), t[k]));
                    }
                }
            for (; j < nb; ++j)
                for (int64_t r = 0; r < n; ++r) {
                    float &x = pt[j * kLaneRows + r];
                    x = (capped ? x : a.scale * x) + a.bias[r * a.bias_stride + j0 + j];
                }
        }

        // Vertical online softmax: per lane (row), max over the block's keys, one rescale, weights and their sum.
        const V scale_v = Vec::set1(capped || block_bias ? 1.0f : a.scale), neg_inf_v = Vec::set1(neg_inf);
        for (int v = 0; v < RV; ++v) {
            V mx = neg_inf_v;
            for (int j = 0; j < nb; ++j) {
                const uint32_t bits = (key_rows[j] >> (v * W)) & lane_mask;
                const V x = Vec::blend(bits, neg_inf_v, Vec::mul(scale_v, Vec::load(pt + j * kLaneRows + v * W)));
                Vec::store(pt + j * kLaneRows + v * W, x);
                mx = Vec::max(mx, x);
            }
            const V m_new = Vec::max(mx, m_v[v]);
            // A lane that has seen nothing has m_new = -inf; shifting by -FLT_MAX instead keeps exp() at 0, not NaN.
            // (max's second operand wins on NaN, so a NaN row stays NaN.)
            const V m_safe = Vec::max(Vec::set1(-FLT_MAX), m_new);
            const V neg_m = Vec::mul(m_safe, Vec::set1(-1.0f));
            alpha_v[v] = Vec::exp(Vec::add(m_v[v], neg_m));
            V sum = Vec::zero();
            for (int j = 0; j < nb; ++j) {
                const uint32_t bits = (key_rows[j] >> (v * W)) & lane_mask;
                const V pv = Vec::blend(bits, Vec::zero(), Vec::exp(Vec::add(Vec::load(pt + j * kLaneRows + v * W), neg_m)));
                Vec::store(pt + j * kLaneRows + v * W, pv);
                sum = Vec::add(sum, pv);
            }
            s_v[v] = Vec::fma(s_v[v], alpha_v[v], sum);
            m_v[v] = m_new;
        }

        // V rows converted only now, into the space of K's: the kernel's buffers then fit the L1 cache better.
        for (int j = 0; j < nb; ++j) {
            const unsigned char *vrow = v_row(a, j0 + j);
            for (int64_t c = 0; c < DV / W; ++c) Vec::store(vf + j * DV + c * W, load_row_chunk<Vec, VT>(vrow, c));
        }

        // O^T = O^T * alpha + V^T P^T, CC columns x RV row vectors of accumulators.
        for (int64_t c0 = 0; c0 < DV; c0 += CC) {
            V o[CC][RV];
            for (int cc = 0; cc < CC; ++cc)
                for (int v = 0; v < RV; ++v) o[cc][v] = Vec::zero(); // the block's sum alone (see add_block_sum)
            for (int j = 0; j < nb; ++j) {
                if (key_rows[j] == 0) continue;
                V pv[RV];
                for (int v = 0; v < RV; ++v) pv[v] = Vec::load(pt + j * kLaneRows + v * W);
                if ((key_rows[j] | ~real_rows) == ~0u) {
                    for (int cc = 0; cc < CC; ++cc) {
                        const V vb = Vec::set1(vf[j * DV + c0 + cc]);
                        for (int v = 0; v < RV; ++v) o[cc][v] = Vec::fma(vb, pv[v], o[cc][v]);
                    }
                } else { // some rows do not see key j: leave their lanes untouched (NaN in V must not reach them)
                    for (int cc = 0; cc < CC; ++cc) {
                        const V vb = Vec::set1(vf[j * DV + c0 + cc]);
                        for (int v = 0; v < RV; ++v)
                            o[cc][v] = Vec::fma_select((key_rows[j] >> (v * W)) & lane_mask, vb, pv[v], o[cc][v]);
                    }
                }
            }
            for (int cc = 0; cc < CC; ++cc)
                for (int v = 0; v < RV; ++v) {
                    float *p = ot + (c0 + cc) * kLaneRows + v * W;
                    Vec::store(p, Vec::fma(Vec::load(p), alpha_v[v], o[cc][v]));
                }
        }
    }

    // Back to the row-major outputs the caller expects.
    alignas(64) float mrow[kLaneRows], srow[kLaneRows];
    for (int v = 0; v < RV; ++v) {
        Vec::store(mrow + v * W, m_v[v]);
        Vec::store(srow + v * W, s_v[v]);
    }
    for (int64_t r = 0; r < n; ++r) {
        a.m[r] = srow[r] != 0.0f ? mrow[r] : neg_inf;
        a.s[r] = srow[r];
    }
    int64_t c0 = 0;
    // W x W blocks through registers (the scalar copy was ~4 % of a prefill)
    for (; c0 + W <= DV; c0 += W)
        for (int v = 0; v < RV && v * W < n; ++v) {
            V t[W];
            for (int i = 0; i < W; ++i) t[i] = Vec::load(ot + (c0 + i) * kLaneRows + v * W);
            Vec::transpose(t);
            for (int i = 0; i < W && v * W + i < n; ++i) Vec::store(a.acc + (v * W + i) * DV + c0, t[i]);
        }
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = c0; c < DV; ++c) a.acc[r * DV + c] = ot[c * kLaneRows + r];
}

template <class Vec, fst_type KT> void attend_lanes_v(const ChunkArgs &a) {
    switch (a.v_type) {
    case FST_TYPE_F32: return attend_lanes<Vec, KT, FST_TYPE_F32>(a);
    case FST_TYPE_F16: return attend_lanes<Vec, KT, FST_TYPE_F16>(a);
    case FST_TYPE_BF16: return attend_lanes<Vec, KT, FST_TYPE_BF16>(a);
    case FST_TYPE_Q8_0: return attend_lanes<Vec, KT, FST_TYPE_Q8_0>(a);
    default: return attend_lanes<Vec, KT, FST_TYPE_Q4_0>(a);
    }
}

template <class Vec> void attend_lanes_kv(const ChunkArgs &a) {
    switch (a.k_type) {
    case FST_TYPE_F32: return attend_lanes_v<Vec, FST_TYPE_F32>(a);
    case FST_TYPE_F16: return attend_lanes_v<Vec, FST_TYPE_F16>(a);
    case FST_TYPE_BF16: return attend_lanes_v<Vec, FST_TYPE_BF16>(a);
    case FST_TYPE_Q8_0: return attend_lanes_v<Vec, FST_TYPE_Q8_0>(a);
    default: return attend_lanes_v<Vec, FST_TYPE_Q4_0>(a);
    }
}

} // namespace
} // namespace fst::kernels::simd
