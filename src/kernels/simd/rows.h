// The decode kernel's units and how it reads K/V: row groups of up to 4 query rows, blocks of 64 keys (one bit per
// key), a row's vectors loaded and converted (F16/BF16 widened, Q8_0/Q4_0 dequantized, a quantized block's scale
// prepared ahead), and where each key's rows are (contiguous or paged) with the software prefetch ahead of them.
// Part of the SIMD kernel (attend_simd.h): templates over a vector-operations struct Vec, compiled per ISA.
#pragma once

#include "kernels/kernel.h"

#include <cstdint>

namespace fst::kernels::simd {
// Internal linkage: each ISA's file gets its own copies, so the linker can never pick a copy compiled for a wider ISA
// for use elsewhere (which is also why no std:: algorithm templates are used here).
namespace {

constexpr int kRowsPerGroup = 4;
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline float maxf(float a, float b) { return a > b ? a : b; }
constexpr int kBlockKeys = 64;
using KeyBits = uint64_t; // one bit per key of a block
inline KeyBits low_bits(int64_t n) { return n >= 64 ? ~KeyBits(0) : (KeyBits(1) << n) - 1; }

// Types whose rows are whole F32/F16/BF16 vectors (the others: quantized blocks).
constexpr bool wide_type(fst_type t) { return t == FST_TYPE_F32 || t == FST_TYPE_F16 || t == FST_TYPE_BF16; }

template <class Vec, fst_type T> inline typename Vec::V load_row_chunk(const unsigned char *row, int64_t c) {
    if constexpr (T == FST_TYPE_F32) return Vec::load_f32(row, c);
    else if constexpr (T == FST_TYPE_F16) return Vec::load_f16(row, c);
    else if constexpr (T == FST_TYPE_BF16) return Vec::load_bf16(row, c);
    else if constexpr (T == FST_TYPE_Q8_0) return Vec::load_q8_0(row, c);
    else return Vec::load_q4_0(row, c);
}

// Chunk c of a quantized row whose block scale d the caller has already broadcast.
template <class Vec, fst_type T>
inline typename Vec::V load_scaled_chunk(const unsigned char *row, int64_t c, typename Vec::V d) {
    if constexpr (T == FST_TYPE_Q8_0) return Vec::load_q8_0_scaled(row, c, d);
    else return Vec::load_q4_0_scaled(row, c, d);
}

// Chunks c and c + 1 of a row (c even); quantized types share their block's load and scale.
template <class Vec, fst_type T>
inline void load_row_pair(const unsigned char *row, int64_t c, typename Vec::V &lo, typename Vec::V &hi) {
    if constexpr (T == FST_TYPE_Q8_0) Vec::load_q8_0_pair(row, c, lo, hi);
    else if constexpr (T == FST_TYPE_Q4_0) Vec::load_q4_0_pair(row, c, lo, hi);
    else {
        lo = load_row_chunk<Vec, T>(row, c);
        hi = load_row_chunk<Vec, T>(row, c + 1);
    }
}

template <fst_type T> constexpr int64_t row_bytes(int64_t n) {
    if constexpr (T == FST_TYPE_F32) return n * 4;
    else if constexpr (T == FST_TYPE_F16 || T == FST_TYPE_BF16) return n * 2;
    else if constexpr (T == FST_TYPE_Q8_0) return n / 32 * 34;
    else return n / 32 * 18;
}

// What dequantizing the block that holds chunk c of a quantized row takes besides the block's bytes (Vec::q8_0_prep,
// Vec::q4_0_prep). Loading the F16 scale, converting it and (Q4_0 on AVX-512) scaling the lookup table lie on the
// path from the row's bytes to the first FMA; the kernel makes them one step (a block of K, a row of V) ahead of
// use, so that they overlap the previous step's FMAs (Zen 5, kernel alone: Q4_0 13 % fewer cycles; docs/PERFORMANCE.md).
template <class Vec, fst_type T> inline typename Vec::V block_prep(const unsigned char *row, int64_t c) {
    const unsigned char *block = row + (c * Vec::W / 32) * row_bytes<T>(32);
    if constexpr (T == FST_TYPE_Q8_0) return Vec::q8_0_prep(block);
    else return Vec::q4_0_prep(block);
}

// Chunks c and c + 1 of a quantized row (c even) with their block's preparation made ahead.
template <class Vec, fst_type T>
inline void load_row_pair(const unsigned char *row, int64_t c, typename Vec::V prep, typename Vec::V &lo, typename Vec::V &hi) {
    if constexpr (T == FST_TYPE_Q8_0) Vec::load_q8_0_pair(row, c, prep, lo, hi);
    else Vec::load_q4_0_pair(row, c, prep, lo, hi);
}

// A vector load the compiler must keep in a register: GCC 12 otherwise folds a fresh load of Q into every FMA that
// uses it (once per key instead of once per chunk), which made AVX2's logits loop ~40 % slower (docs/PERFORMANCE.md).
template <class Vec> inline typename Vec::V pinned_load(const float *p) {
    typename Vec::V v = Vec::load(p);
    asm("" : "+v"(v));
    return v;
}

// Decode streams K and V from DRAM: each row is asked for some keys ahead, one row at a time spread over the
// arithmetic (prefetching whole blocks at once stalled the core). How far ahead and into which cache level is
// tuned per CPU kind (kernels/dispatch.cpp). A prefetch never faults, so asking past the end of the keys is harmless.
// Where the rows of the keys are (Paged: through the chunk's page pointers, see ChunkArgs; a template parameter so
// that the contiguous case keeps its plain address arithmetic: the run-time test per row cost Q8_0 decode 4 %),
// and which row to prefetch while key j is read: pf's keys ahead (in pages, past the pointers: the row itself).
template <bool Paged> struct Rows {
    static constexpr bool kPaged = Paged;
    size_t k_ahead = 0, v_ahead = 0; // bytes from a row to the row to prefetch (contiguous rows)
    int64_t k_keys = 0, v_keys = 0;   // the same in keys
    int64_t k_bytes = 0, v_bytes = 0; // bytes of one row
    bool to_l1 = false;
    const unsigned char *k(const ChunkArgs &a, int64_t j) const {
        if constexpr (Paged) return paged_row(a.k_pages, a.page_shift, a.k_stride, j);
        else return a.k + size_t(j) * a.k_stride;
    }
    const unsigned char *v(const ChunkArgs &a, int64_t j) const {
        if constexpr (Paged) return paged_row(a.v_pages, a.page_shift, a.v_stride, j);
        else return a.v + size_t(j) * a.v_stride;
    }
    // Contiguous rows: the address some rows past this one, in integers (it may lie past the view, or, for a view of
    // one key whose row stride is arbitrary, anywhere: only a prefetch reads it, and a prefetch never faults).
    const unsigned char *k_ahead_of(const ChunkArgs &a, const unsigned char *row, int64_t j) const {
        if constexpr (Paged) return j + k_keys < a.paged_keys ? k(a, j + k_keys) : row;
        else return reinterpret_cast<const unsigned char *>(reinterpret_cast<uintptr_t>(row) + k_ahead);
    }
    const unsigned char *v_ahead_of(const ChunkArgs &a, const unsigned char *row, int64_t j) const {
        if constexpr (Paged) return j + v_keys < a.paged_keys ? v(a, j + v_keys) : row;
        else return reinterpret_cast<const unsigned char *>(reinterpret_cast<uintptr_t>(row) + v_ahead);
    }
};
template <fst_type KT, fst_type VT, bool Paged> Rows<Paged> row_access(const ChunkArgs &a) {
    const PrefetchTuning &t = prefetch_tuning();
    auto keys = [&](fst_type type) { return wide_type(type) ? t.keys_wide : t.keys_quantized; };
    Rows<Paged> pf;
    pf.k_ahead = size_t(keys(KT)) * a.k_stride;
    pf.v_ahead = size_t(keys(VT)) * a.v_stride;
    pf.k_keys = keys(KT);
    pf.v_keys = keys(VT);
    pf.k_bytes = row_bytes<KT>(a.D);
    pf.v_bytes = row_bytes<VT>(a.DV);
    pf.to_l1 = t.to_l1;
    return pf;
}
// Volatile asm, not _mm_prefetch: with the hint chosen at run time GCC 12 deleted the _mm_prefetch loops as free of
// side effects (at -O2 all of them, at -O3 the prefetcht0 ones), which silently turned the prefetch off.
inline void prefetch_row(const unsigned char *row, int64_t bytes, bool to_l1) {
    if (to_l1)
        for (int64_t b = 0; b < bytes; b += 64) asm volatile("prefetcht0 (%0)" : : "r"(row + b));
    else
        for (int64_t b = 0; b < bytes; b += 64) asm volatile("prefetcht2 (%0)" : : "r"(row + b));
}

} // namespace
} // namespace fst::kernels::simd
