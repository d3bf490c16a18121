// AVX-512 (F, BW, VL, DQ) vector operations for the shared SIMD kernel (kernels/simd/attend_simd.h).
// Only files compiled with AVX-512 flags include this.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace fst::kernels::avx512 {

struct Vec {
    using V = __m512;
    static constexpr int W = 16;       // floats per vector
    static constexpr int kQkKeys = 4;  // keys per QK step (x 4 rows = 16 accumulators)
    static constexpr bool kQkPairs = true; // logits take chunks two at a time (a Q8_0 block: one scale, one load)
    static constexpr int kPvChunks = 4; // DV vectors per PV pass (x 4 rows = 16 accumulators) of Q4_0 V
    // Q8_0 V: a whole row of DV = 128 per pass too, a block at a time (its scale converted where it is used: prepared
    // a row ahead for 4 blocks it held too many registers, 1.6x slower). 2-3 % faster than two passes (session 17);
    // Q4_0 measured 3-5 % slower so (its table lookups want the table prepared ahead) and keeps two.
    static constexpr int kPvChunksQ8 = 8;
    // F32/F16/BF16 V: a whole row of DV = 128 per pass (32 sums, a few of which GCC keeps on the stack). Two passes
    // over half rows each (each block's rows visited twice, all their prefetches in the first pass) took 8 % longer
    // from DRAM on one thread, 4-5 % on two (Zen 5, F16 decode; docs/PERFORMANCE.md, session 17).
    static constexpr int kPvChunksWide = 8;
    static constexpr int kLaneKeys = 8; // rows-as-lanes path: keys per QK step (x 2 row vectors = 16 accumulators)
    static constexpr int kLaneVals = 8; // rows-as-lanes path: V columns per PV step (x 2 row vectors)

    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V load(const float *p) { return _mm512_loadu_ps(p); }
    static void store(float *p, V v) { _mm512_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V div(V a, V b) { return _mm512_div_ps(a, b); }
    static V abs(V a) { return _mm512_abs_ps(a); }
    // |mag| with the sign of s (mag must be >= 0 or NaN).
    static V with_sign_of(V mag, V s) {
        return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(mag), _mm512_and_si512(_mm512_castps_si512(s), _mm512_set1_epi32(int(0x80000000u)))));
    }
    // Bit i set where a[i] < b[i] (false for NaN).
    static uint32_t less_lanes(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V max(V a, V b) { return _mm512_max_ps(a, b); }
    static float reduce_add(V a) { return _mm512_reduce_add_ps(a); }
    static float reduce_max(V a) { return _mm512_reduce_max_ps(a); }
    // Lane i takes b where bit i of `bits` is set, else a.
    static V blend(uint32_t bits, V a, V b) { return _mm512_mask_blend_ps(__mmask16(bits), a, b); }
    // Lanes with their bit set: a * b + c; other lanes: c, untouched (so 0 * NaN never reaches them).
    static V fma_select(uint32_t bits, V a, V b, V c) { return _mm512_mask3_fmadd_ps(a, b, c, __mmask16(bits)); }
    // Bit i set where p[i] is -inf (a mask value that hides the key).
    static uint32_t neg_inf_lanes(const float *p) {
        return _mm512_cmp_ps_mask(_mm512_loadu_ps(p), _mm512_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
    }

    // Element c*W .. c*W+15 of a row, converted exactly to F32.
    static V load_f32(const unsigned char *row, int64_t c) { return _mm512_loadu_ps(reinterpret_cast<const float *>(row) + c * W); }
    static V load_f16(const unsigned char *row, int64_t c) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + c * W * 2)));
    }
    static V load_bf16(const unsigned char *row, int64_t c) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + c * W * 2)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    }
    // Q8_0: 34-byte blocks; chunk c is half c % 2 of block c / 2.
    static V load_q8_0(const unsigned char *row, int64_t c) {
        const unsigned char *b = row + (c >> 1) * 34;
        const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2 + (c & 1) * 16)));
        return _mm512_mul_ps(block_scale_v(b), _mm512_cvtepi32_ps(q));
    }
    // Q4_0: 18-byte blocks; elements 0..15 are the low nibbles of the 16 bytes, 16..31 the high nibbles.
    static V load_q4_0(const unsigned char *row, int64_t c) {
        V lo, hi;
        load_q4_0_pair(row, c & ~int64_t(1), lo, hi);
        return c & 1 ? hi : lo;
    }

    // The block scale broadcast to every lane: one 16-bit broadcast load and one conversion.
    static V block_scale_v(const unsigned char *block) {
        uint16_t h;
        std::memcpy(&h, block, 2);
        return _mm512_cvtph_ps(_mm256_set1_epi16(short(h)));
    }

    // What dequantizing a block takes besides its bytes: Q8_0 its scale in every lane; Q4_0 a table of its 16 values
    // d * (n - 8). The kernel makes it a step ahead of use (see block_prep in kernels/simd/attend_simd.h).
    static V q8_0_prep(const unsigned char *block) { return block_scale_v(block); }
    static V q4_0_prep(const unsigned char *block) {
        return _mm512_mul_ps(block_scale_v(block), _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
    }

    // Chunks c and c + 1 (c even: one whole block) at once, sharing the block's load and preparation.
    static void load_q8_0_pair(const unsigned char *row, int64_t c, V d, V &lo, V &hi) {
        const unsigned char *b = row + (c >> 1) * 34;
        lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2)))));
        hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 18)))));
    }
    static void load_q8_0_pair(const unsigned char *row, int64_t c, V &lo, V &hi) {
        load_q8_0_pair(row, c, q8_0_prep(row + (c >> 1) * 34), lo, hi);
    }
    // One lookup per lane in the block's table: vpermps indexes by the low 4 bits of each lane, so the zero-extended
    // bytes select by their low nibble as they are and by their high one after a shift. Each table entry is an exact
    // product (a 4-bit integer times an F16 value), the same bits as (n - 8) * d; 9 instructions per block instead of
    // 13 (convert, scale, offset per nibble).
    static void load_q4_0_pair(const unsigned char *row, int64_t c, V table, V &lo, V &hi) {
        const unsigned char *b = row + (c >> 1) * 18;
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2)));
        lo = _mm512_permutexvar_ps(bytes, table);
        hi = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);
    }
    static void load_q4_0_pair(const unsigned char *row, int64_t c, V &lo, V &hi) {
        load_q4_0_pair(row, c, q4_0_prep(row + (c >> 1) * 18), lo, hi);
    }

    // Transposes 16 vectors in place (r[i] lane j <-> r[j] lane i): pairs, quads, then 128-bit blocks twice.
    static void transpose(V (&r)[W]) {
        V t[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
            const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
            r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        // r[4q + k], 128-bit block b: lane 4b + k of inputs 4q..4q+3; gather the four q for each output.
        for (int k = 0; k < 4; ++k) {
            const V a = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88), b = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
            const V c = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88), d = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
            t[k] = _mm512_shuffle_f32x4(a, c, 0x88);
            t[8 + k] = _mm512_shuffle_f32x4(a, c, 0xDD);
            t[4 + k] = _mm512_shuffle_f32x4(b, d, 0x88);
            t[12 + k] = _mm512_shuffle_f32x4(b, d, 0xDD);
        }
        for (int i = 0; i < 16; ++i) r[i] = t[i];
    }

    // out[i] = sum of the lanes of the i-th argument. Lanes of different arguments never mix, so a NaN in one
    // accumulator stays in its own sum.
    static void reduce4(V a, V b, V c, V d, float *out) {
        const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
        const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
        V x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
        // Each 128-bit lane now holds four partial sums of one argument.
        x = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));
        x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xB1));
        const __m128 r = _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x));
        _mm_storeu_ps(out, r);
    }

    // x[r * row_stride + u] = sum of the lanes of acc[u][r], for 4 keys u and 4 rows r: a reduction tree that ends
    // in one vector whose 128-bit block r holds row r's four sums. Only lanes of the same accumulator are added.
    static void reduce_keys(const V (&acc)[kQkKeys][4], float *x, int64_t row_stride) {
        V key[4]; // key[u], block r: four partial sums of acc[u][r]
        for (int u = 0; u < 4; ++u) {
            const V a01 = _mm512_add_ps(_mm512_shuffle_f32x4(acc[u][0], acc[u][1], 0x44), _mm512_shuffle_f32x4(acc[u][0], acc[u][1], 0xEE));
            const V a23 = _mm512_add_ps(_mm512_shuffle_f32x4(acc[u][2], acc[u][3], 0x44), _mm512_shuffle_f32x4(acc[u][2], acc[u][3], 0xEE));
            key[u] = _mm512_add_ps(_mm512_shuffle_f32x4(a01, a23, 0x88), _mm512_shuffle_f32x4(a01, a23, 0xDD));
        }
        const V k01 = _mm512_add_ps(_mm512_unpacklo_ps(key[0], key[1]), _mm512_unpackhi_ps(key[0], key[1]));
        const V k23 = _mm512_add_ps(_mm512_unpacklo_ps(key[2], key[3]), _mm512_unpackhi_ps(key[2], key[3]));
        const V sums = _mm512_add_ps(_mm512_shuffle_ps(k01, k23, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_ps(k01, k23, _MM_SHUFFLE(3, 2, 3, 2)));
        _mm_storeu_ps(x, _mm512_castps512_ps128(sums));
        _mm_storeu_ps(x + row_stride, _mm512_extractf32x4_ps(sums, 1));
        _mm_storeu_ps(x + 2 * row_stride, _mm512_extractf32x4_ps(sums, 2));
        _mm_storeu_ps(x + 3 * row_stride, _mm512_extractf32x4_ps(sums, 3));
    }

    // e^x for x <= 0 (and moderately positive x): x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-7 Taylor
    // polynomial (truncation < 5e-9 relative), 2^n applied by scalef, which underflows gracefully to 0.
    // Maximum relative error against double exp over [-87, 10]: 0.6 ulp measured, 1 ulp tested (tests/test_kernels.cpp).
    static V exp(V x) {
        x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); // operand order: a NaN x passes through (NaN in, NaN out)
        x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);
        const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        V r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
        V p = _mm512_set1_ps(1.0f / 5040.0f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        return _mm512_scalef_ps(p, n);
    }
};

} // namespace fst::kernels::avx512
