// AVX-512F loops for the machine limits. The only file of the tool compiled with -mavx512f; called only after
// __builtin_cpu_supports("avx512f").
#include "peak.h"

#include <immintrin.h>

namespace flashstate_tool::peak {

// 12 independent chains: an FMA has a latency of 4 cycles and two ports issue one each per cycle, so at least 8
// chains are in flight at any time; 12 leaves margin. x = x * m + c converges to 1, so no value overflows or
// becomes denormal however long the loop runs.
float fma_avx512(int64_t iterations) {
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    // Distinct starting values: with equal ones the compiler merges the twelve chains into one.
    __m512 a0 = _mm512_set1_ps(1.00f), a1 = _mm512_set1_ps(1.01f), a2 = _mm512_set1_ps(1.02f);
    __m512 a3 = _mm512_set1_ps(1.03f), a4 = _mm512_set1_ps(1.04f), a5 = _mm512_set1_ps(1.05f);
    __m512 a6 = _mm512_set1_ps(1.06f), a7 = _mm512_set1_ps(1.07f), a8 = _mm512_set1_ps(1.08f);
    __m512 a9 = _mm512_set1_ps(1.09f), a10 = _mm512_set1_ps(1.10f), a11 = _mm512_set1_ps(1.11f);
    for (int64_t i = 0; i < iterations; ++i) {
        a0 = _mm512_fmadd_ps(a0, m, c);
        a1 = _mm512_fmadd_ps(a1, m, c);
        a2 = _mm512_fmadd_ps(a2, m, c);
        a3 = _mm512_fmadd_ps(a3, m, c);
        a4 = _mm512_fmadd_ps(a4, m, c);
        a5 = _mm512_fmadd_ps(a5, m, c);
        a6 = _mm512_fmadd_ps(a6, m, c);
        a7 = _mm512_fmadd_ps(a7, m, c);
        a8 = _mm512_fmadd_ps(a8, m, c);
        a9 = _mm512_fmadd_ps(a9, m, c);
        a10 = _mm512_fmadd_ps(a10, m, c);
        a11 = _mm512_fmadd_ps(a11, m, c);
    }
    const __m512 s = _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                      _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
        _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}

// Four 64-byte loads per step into four XOR accumulators (XOR has a latency of one cycle, so the loop is bound
// by the loads alone).
uint64_t read_avx512(const unsigned char *data, size_t bytes) {
    __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0;
    size_t i = 0;
    for (; i + 256 <= bytes; i += 256) {
        x0 = _mm512_xor_si512(x0, _mm512_loadu_si512(data + i));
        x1 = _mm512_xor_si512(x1, _mm512_loadu_si512(data + i + 64));
        x2 = _mm512_xor_si512(x2, _mm512_loadu_si512(data + i + 128));
        x3 = _mm512_xor_si512(x3, _mm512_loadu_si512(data + i + 192));
    }
    const __m512i x = _mm512_xor_si512(_mm512_xor_si512(x0, x1), _mm512_xor_si512(x2, x3));
    alignas(64) uint64_t lanes[8];
    _mm512_store_si512(lanes, x);
    uint64_t r = 0;
    for (uint64_t lane : lanes) r ^= lane;
    return r ^ read_plain(data + i, bytes - i);
}

} // namespace flashstate_tool::peak
