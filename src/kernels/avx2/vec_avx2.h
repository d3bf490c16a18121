// AVX2 + FMA + F16C vector operations for the shared SIMD kernel (kernels/simd/attend_simd.h).
// Only files compiled with AVX2 flags include this.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace fst::kernels::avx2 {

struct Vec {
    using V = __m256;
    static constexpr int W = 8;
    static constexpr int kQkKeys = 2;   // keys per QK step (x 4 rows = 8 accumulators of 16 registers)
    static constexpr bool kQkPairs = false; // logits take one chunk at a time (Q's 4 vectors + 8 accumulators + K)
    static constexpr int kPvChunks = 2; // DV vectors per PV pass (x 4 rows = 8 accumulators) of quantized V
    static constexpr int kPvChunksQ8 = 2;
    // F32/F16/BF16 V: 3 (12 accumulators). With 8, each accumulator's chain of one FMA per key held the pass to the
    // FMA latency; 12 cut ~5 % of an F16 decode (docs/PERFORMANCE.md). Quantized V stays at 2: its chunks are
    // dequantized in pairs, and Q4_0 got slower.
    static constexpr int kPvChunksWide = 3;
    static constexpr int kLaneKeys = 3; // rows-as-lanes path: keys per QK step (x 4 row vectors = 12 accumulators)
    static constexpr int kLaneVals = 2; // rows-as-lanes path: V columns per PV step (x 4 row vectors)

    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V load(const float *p) { return _mm256_loadu_ps(p); }
    static void store(float *p, V v) { _mm256_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static V div(V a, V b) { return _mm256_div_ps(a, b); }
    static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
    // |mag| with the sign of s (mag must be >= 0 or NaN).
    static V with_sign_of(V mag, V s) { return _mm256_or_ps(mag, _mm256_and_ps(s, _mm256_set1_ps(-0.0f))); }
    // Transposes 8 vectors in place (r[i] lane j <-> r[j] lane i): pairs, quads, then the 128-bit halves.
    static void transpose(V (&r)[W]) {
        V t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int q = 0; q < 8; q += 4) { // u[q + k], each half: lane k (and k + 4) of rows q .. q + 3
            u[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
            u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
            u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
            u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
        }
        for (int k = 0; k < 4; ++k) {
            r[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
            r[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
        }
    }
    // Bit i set where a[i] < b[i] (false for NaN).
    static uint32_t less_lanes(V a, V b) { return uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ))); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V max(V a, V b) { return _mm256_max_ps(a, b); }
    static float reduce_max(V a) {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        return _mm_cvtss_f32(m);
    }
    // Lane i takes b where bit i of `bits` is set, else a.
    // Bit i set where p[i] is -inf (a mask value that hides the key).
    static uint32_t neg_inf_lanes(const float *p) {
        return uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p), _mm256_set1_ps(-__builtin_inff()), _CMP_EQ_OQ)));
    }
    static V blend(uint32_t bits, V a, V b) {
        const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(int(bits)), lane), lane);
        return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(set));
    }
    // Lanes with their bit set: a * b + c; other lanes: c, untouched (so 0 * NaN never reaches them).
    static V fma_select(uint32_t bits, V a, V b, V c) { return blend(bits, c, _mm256_fmadd_ps(a, b, c)); }
    static float reduce_add(V a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }

    static V load_f32(const unsigned char *row, int64_t c) { return _mm256_loadu_ps(reinterpret_cast<const float *>(row) + c * W); }
    static V load_f16(const unsigned char *row, int64_t c) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + c * W * 2)));
    }
    static V load_bf16(const unsigned char *row, int64_t c) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + c * W * 2)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    static float block_scale(const unsigned char *block) {
        uint16_t h;
        std::memcpy(&h, block, 2);
        return _cvtsh_ss(h);
    }
    static V block_scale_v(const unsigned char *block) { return _mm256_set1_ps(block_scale(block)); }
    // Q8_0: chunk c is quarter c % 4 of block c / 4; d is that block's scale in every lane.
    static V load_q8_0_scaled(const unsigned char *row, int64_t c, V d) {
        const unsigned char *b = row + (c >> 2) * 34;
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(b + 2 + (c & 3) * 8)));
        return _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
    }
    static V load_q8_0(const unsigned char *row, int64_t c) { return load_q8_0_scaled(row, c, block_scale_v(row + (c >> 2) * 34)); }
    // Q4_0: quarters 0, 1 are the low nibbles of bytes 0..7, 8..15; quarters 2, 3 the high nibbles.
    static V load_q4_0_scaled(const unsigned char *row, int64_t c, V d) {
        const unsigned char *b = row + (c >> 2) * 18;
        __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(b + 2 + (c & 1) * 8));
        if (c & 2) bytes = _mm_srli_epi16(bytes, 4);
        bytes = _mm_and_si128(bytes, _mm_set1_epi8(0x0f));
        const __m256i q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(bytes), _mm256_set1_epi32(8));
        return _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
    }
    static V load_q4_0(const unsigned char *row, int64_t c) { return load_q4_0_scaled(row, c, block_scale_v(row + (c >> 2) * 18)); }

    // What dequantizing a block takes besides its bytes: its scale in every lane (for both types). The kernel makes it
    // a step ahead of use (see block_prep in kernels/simd/attend_simd.h).
    static V q8_0_prep(const unsigned char *block) { return block_scale_v(block); }
    static V q4_0_prep(const unsigned char *block) { return block_scale_v(block); }

    // Chunks c and c + 1 (c even: half a block) at once, sharing the block's load and scale d.
    static void load_q8_0_pair(const unsigned char *row, int64_t c, V d, V &lo, V &hi) {
        const unsigned char *b = row + (c >> 2) * 34;
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2 + (c & 2) * 8));
        lo = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)));
        hi = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8))));
    }
    static void load_q8_0_pair(const unsigned char *row, int64_t c, V &lo, V &hi) {
        load_q8_0_pair(row, c, q8_0_prep(row + (c >> 2) * 34), lo, hi);
    }
    // (q - 8) * d as q * d + (-8 d), exact as in the AVX-512 version.
    static void load_q4_0_pair(const unsigned char *row, int64_t c, V d, V &lo, V &hi) {
        const unsigned char *b = row + (c >> 2) * 18;
        __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2));
        if (c & 2) bytes = _mm_srli_epi16(bytes, 4);
        bytes = _mm_and_si128(bytes, _mm_set1_epi8(0x0f));
        const V off = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
        lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)), d, off);
        hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8))), d, off);
    }
    static void load_q4_0_pair(const unsigned char *row, int64_t c, V &lo, V &hi) {
        load_q4_0_pair(row, c, q4_0_prep(row + (c >> 2) * 18), lo, hi);
    }

    // out[i] = sum of the lanes of the i-th argument (lanes of different arguments never mix).
    static void reduce4(V a, V b, V c, V d, float *out) {
        const V ab = _mm256_hadd_ps(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
        const V cd = _mm256_hadd_ps(c, d);
        const V x = _mm256_hadd_ps(ab, cd); // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)));
    }

    // x[r * row_stride + u] = sum of the lanes of acc[u][r], for 2 keys u and 4 rows r (lanes of different
    // accumulators never mix).
    static void reduce_keys(const V (&acc)[kQkKeys][4], float *x, int64_t row_stride) {
        // Lane order of each half after the hadds: (r0,u0) (r0,u1) (r1,u0) (r1,u1), then rows 2 and 3.
        const V r01 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0][0], acc[1][0]), _mm256_hadd_ps(acc[0][1], acc[1][1]));
        const V r23 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0][2], acc[1][2]), _mm256_hadd_ps(acc[0][3], acc[1][3]));
        const V sums = _mm256_add_ps(_mm256_permute2f128_ps(r01, r23, 0x20), _mm256_permute2f128_ps(r01, r23, 0x31));
        const __m128 lo = _mm256_castps256_ps128(sums), hi = _mm256_extractf128_ps(sums, 1);
        _mm_storel_pi(reinterpret_cast<__m64 *>(x), lo);
        _mm_storeh_pi(reinterpret_cast<__m64 *>(x + row_stride), lo);
        _mm_storel_pi(reinterpret_cast<__m64 *>(x + 2 * row_stride), hi);
        _mm_storeh_pi(reinterpret_cast<__m64 *>(x + 3 * row_stride), hi);
    }

    // e^x as in the AVX-512 version (0.6 ulp measured, 1 ulp tested); 2^n is built in the exponent bits, and inputs below -87 return 0 (the
    // smallest normal float is e^-87.3; the kernels only use e^x for weights relative to the running max).
    static V exp(V x) {
        const V tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
        x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x); // operand order: a NaN x passes through (NaN in, NaN out)
        x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);
        const V n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        V r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
        r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
        V p = _mm256_set1_ps(1.0f / 5040.0f);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        // n in [-126, 127] here: scale by building 2^n in the exponent field.
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
    }
};

} // namespace fst::kernels::avx2
