// Portable kernels: plain C++ that the compiler can vectorize for any x86-64 (SSE2). Blocks of 32 keys are
// converted to F32 once and shared by all rows of the tile; the online softmax rescales once per block.
#include "kernels/kernel.h"
#include "tensor/types.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace fst::kernels {

namespace {

constexpr int64_t kBlockKeys = 32;

// Eight independent partial sums, combined pairwise: vectorizable, and more accurate than one running sum.
float dot(const float *a, const float *b, int64_t n) {
    float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) p[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; ++i, ++l) p[l] += a[i] * b[i];
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

void attend_chunk(const ChunkArgs &a) {
    constexpr float neg_inf = -std::numeric_limits<float>::infinity();
    float *kf = a.scratch;                   // kBlockKeys x D
    float *vf = kf + kBlockKeys * a.D;       // kBlockKeys x DV
    float *x = vf + kBlockKeys * a.DV;       // kBlockKeys logits of one row
    float *block_acc = x + kBlockKeys;       // DV: one row's weighted V sum over the block
    for (int64_t i = 0; i < a.n_rows; ++i) {
        a.m[i] = neg_inf;
        a.s[i] = 0.0f;
        std::fill(a.acc + i * a.DV, a.acc + (i + 1) * a.DV, 0.0f);
    }
    for (int64_t j0 = 0; j0 < a.n_keys; j0 += kBlockKeys) {
        const int64_t nb = std::min(kBlockKeys, a.n_keys - j0);
        // Skip a block that no row can see: its bytes are then never read.
        bool any_visible = false;
        for (int64_t i = 0; i < a.n_rows && !any_visible; ++i)
            for (int64_t j = std::max<int64_t>(j0, a.lo[i]); j < std::min<int64_t>(j0 + nb, a.hi[i]) && !any_visible; ++j)
                any_visible = a.bias == nullptr || a.bias[i * a.bias_stride + j] != neg_inf;
        if (!any_visible) continue;
        for (int64_t j = 0; j < nb; ++j) {
            row_to_f32(a.k_type, k_row(a, j0 + j), kf + j * a.D, a.D);
            row_to_f32(a.v_type, v_row(a, j0 + j), vf + j * a.DV, a.DV);
        }
        for (int64_t i = 0; i < a.n_rows; ++i) {
            const float *q = a.q + i * a.D;
            const float *bias = a.bias ? a.bias + i * a.bias_stride + j0 : nullptr;
            float block_max = neg_inf;
            for (int64_t j = 0; j < nb; ++j) {
                if (j0 + j < a.lo[i] || j0 + j >= a.hi[i] || (bias && bias[j] == neg_inf)) {
                    x[j] = neg_inf; // hidden: never computed, so NaN in its K cannot leak in
                    continue;
                }
                float xj = a.scale * dot(q, kf + j * a.D, a.D);
                if (a.softcap > 0.0f) xj = a.softcap * std::tanh(xj / a.softcap);
                if (bias) xj += bias[j];
                x[j] = xj;
                block_max = (xj > block_max || xj != xj) ? xj : block_max; // NaN propagates: NaN in, NaN out
            }
            if (block_max == neg_inf) continue;
            float *acc = a.acc + i * a.DV;
            const float m_new = std::max(a.m[i], block_max);
            if (m_new != a.m[i] && a.s[i] != 0.0f) {
                const float alpha = std::exp(a.m[i] - m_new);
                a.s[i] *= alpha;
                for (int64_t c = 0; c < a.DV; ++c) acc[c] *= alpha;
            }
            a.m[i] = m_new;
            // The block's sums start from zero and join acc and s once (blocked summation: the rounding error
            // grows with the blocks and a block's keys, not with all the chunk's keys in a row).
            float block_sum = 0.0f;
            std::fill(block_acc, block_acc + a.DV, 0.0f);
            for (int64_t j = 0; j < nb; ++j) {
                if (x[j] == neg_inf) continue; // hidden keys: NaN in V must not reach acc through 0 * NaN
                const float p = std::exp(x[j] - m_new);
                block_sum += p;
                const float *v = vf + j * a.DV;
                for (int64_t c = 0; c < a.DV; ++c) block_acc[c] += p * v[c];
            }
            for (int64_t c = 0; c < a.DV; ++c) acc[c] += block_acc[c];
            a.s[i] += block_sum;
        }
    }
}

void attend_chunks(const ChunkArgs *chunks, int n) {
    for (int i = 0; i < n; ++i) attend_chunk(chunks[i]);
}

size_t scratch_floats(int64_t D, int64_t DV, int64_t) { return size_t(kBlockKeys * (D + DV) + kBlockKeys + DV); }
bool supports(int64_t, int64_t) { return true; }
void exp_array(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
void tanh_array(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

void f16_row_to_f32(const void *x, float *y, int64_t n) {
    const unsigned char *bytes = static_cast<const unsigned char *>(x);
    for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        y[i] = f16_to_f32(h);
    }
}

void combine_rows(float *y, float a, const float *x, float b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = a * y[i] + b * x[i]; // a baseline x86-64 file: no FMA to contract into
}

void scale_row(const float *x, float a, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = a * x[i];
}

} // namespace

const KernelTable &portable_kernels() {
    static const KernelTable table{FST_ISA_PORTABLE, "portable", attend_chunk, attend_chunks, scratch_floats, supports, exp_array, tanh_array,
                                   f16_row_to_f32, combine_rows, scale_row};
    return table;
}

} // namespace fst::kernels
