// The merge ⊕ of two softmax states (SPEC section 2). It exists once: kernels' chunk partials, fst_state_merge,
// sinks, LSE import and every future reduction (split KV, cache tiers, machines) call this.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace fst {

// O_a = wa * O_a + wb * O_b, rounded as written; a kernel table's combine_rows computes the same bits vectorized.
using CombineRows = void (*)(float *y, float a, const float *x, float b, int64_t n);

// (M_a, S_a, O_a) ⊕= (M_b, S_b, O_b), O normalized, length dv. S == 0 means empty whatever M holds, so an empty
// operand is never fed to exp(): no (-inf) - (-inf), hence no NaN. An empty b leaves a untouched (bit for bit).
// O_b == nullptr stands for the zero vector (sinks). `combine`, if given, does the O update (same bits).
inline void merge_state(float &M_a, float &S_a, float *O_a, float M_b, float S_b, const float *O_b, int64_t dv,
                        CombineRows combine = nullptr) {
    if (S_b == 0.0f) return;
    if (S_a == 0.0f) {
        M_a = M_b;
        S_a = S_b;
        for (int64_t c = 0; c < dv; ++c) O_a[c] = O_b ? O_b[c] : 0.0f;
        return;
    }
    const float M = M_a > M_b ? M_a : M_b;
    const float a = S_a * std::exp(M_a - M);
    const float b = S_b * std::exp(M_b - M);
    const float S = a + b;
    const float wa = a / S, wb = b / S;
    if (combine && O_b) combine(O_a, wa, O_b, wb, dv);
    else
        for (int64_t c = 0; c < dv; ++c) O_a[c] = wa * O_a[c] + (O_b ? wb * O_b[c] : 0.0f);
    M_a = M;
    S_a = S;
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

} // namespace fst
