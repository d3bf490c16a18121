// AVX2+FMA loops for the machine limits. The only file of the tool compiled with -mavx2 -mfma; called only after
// __builtin_cpu_supports("avx2") and ("fma").
#include "peak.h"

#include <immintrin.h>

namespace flashstate_tool::peak {

// 12 independent chains (see fma_avx512.cpp for why 12 and why x * m + c).
float fma_avx2(int64_t iterations) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    // Distinct starting values: with equal ones the compiler merges the twelve chains into one.
    __m256 a0 = _mm256_set1_ps(1.00f), a1 = _mm256_set1_ps(1.01f), a2 = _mm256_set1_ps(1.02f);
    __m256 a3 = _mm256_set1_ps(1.03f), a4 = _mm256_set1_ps(1.04f), a5 = _mm256_set1_ps(1.05f);
    __m256 a6 = _mm256_set1_ps(1.06f), a7 = _mm256_set1_ps(1.07f), a8 = _mm256_set1_ps(1.08f);
    __m256 a9 = _mm256_set1_ps(1.09f), a10 = _mm256_set1_ps(1.10f), a11 = _mm256_set1_ps(1.11f);
    for (int64_t i = 0; i < iterations; ++i) {
        a0 = _mm256_fmadd_ps(a0, m, c);
        a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c);
        a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c);
        a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c);
        a10 = _mm256_fmadd_ps(a10, m, c);
        a11 = _mm256_fmadd_ps(a11, m, c);
    }
    const __m256 s = _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                      _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7))),
        _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, s);
    float r = 0.0f;
    for (float lane : lanes) r += lane;
    return r;
}

// Four 32-byte loads per step into four XOR accumulators.
uint64_t read_avx2(const unsigned char *data, size_t bytes) {
    __m256i x0 = _mm256_setzero_si256(), x1 = x0, x2 = x0, x3 = x0;
    size_t i = 0;
    for (; i + 128 <= bytes; i += 128) {
        x0 = _mm256_xor_si256(x0, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(data + i)));
        x1 = _mm256_xor_si256(x1, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(data + i + 32)));
        x2 = _mm256_xor_si256(x2, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(data + i + 64)));
        x3 = _mm256_xor_si256(x3, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(data + i + 96)));
    }
    const __m256i x = _mm256_xor_si256(_mm256_xor_si256(x0, x1), _mm256_xor_si256(x2, x3));
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), x);
    uint64_t r = 0;
    for (uint64_t lane : lanes) r ^= lane;
    return r ^ read_plain(data + i, bytes - i);
}

} // namespace flashstate_tool::peak
