// The decode kernel's weighted V sums: acc_r = acc_r * alpha_r + sum_j p[r][j] v_j over a 64-key block, each V row
// read and converted once for all the rows of the group, a block summed on its own before it joins the earlier
// sum. Per key for blocks whose rows see different keys; straight-line when every row sees the same keys.
// Part of the SIMD kernel (attend_simd.h).
#pragma once

#include "kernels/simd/rows.h"

#include <cstdint>

namespace fst::kernels::simd {
// Internal linkage: each ISA's file gets its own copies (see rows.h).
namespace {

// DV vectors per pass of V sums, by V type (the ISA's choice, kernels/<isa>/vec_<isa>.h).
template <class Vec, fst_type VT> constexpr int pv_chunks() {
    if constexpr (wide_type(VT)) return Vec::kPvChunksWide;
    else if constexpr (VT == FST_TYPE_Q8_0) return Vec::kPvChunksQ8;
    else return Vec::kPvChunks;
}

// acc_r = acc_r * alpha_r + o_r for the G vectors from vector c0: a block's weighted V sum, accumulated on its own
// from zero, joins the earlier blocks' sum in one step. Blocked summation: a chunk's rounding error grows with its 16
// blocks plus a block's 64 keys, not with its 1024 keys one after the other (the same instructions as rescaling acc
// first and adding every key into it, which doubled the error of a 32k decode when chunks grew from 256 keys).
template <class Vec, int NR, int G>
inline void add_block_sum(const ChunkArgs &a, float *acc, const typename Vec::V (&o)[NR][G], const float *alpha, int64_t c0) {
    for (int r = 0; r < NR; ++r) {
        const typename Vec::V al = Vec::set1(alpha[r]);
        for (int u = 0; u < G; ++u) {
            float *p = acc + r * a.DV + (c0 + u) * Vec::W;
            Vec::store(p, Vec::fma(Vec::load(p), al, o[r][u]));
        }
    }
}

// acc_r = acc_r * alpha_r + sum_j p[r][j] v_j over the keys in `keys`, for G vectors of DV starting at vector c0
// (G a compile-time count so that the NR x G accumulators stay in registers). A key hidden from row r (bit clear in
// vis[r]) is never multiplied into acc_r, so NaN in its V cannot reach that row.
template <class Vec, int NR, fst_type VT, int G, bool PrefetchV, class Rows>
void values_group(const ChunkArgs &a, const Rows &pf, float *acc, int64_t j0, KeyBits keys, KeyBits all_rows,
                  const KeyBits *vis, const float p[][kBlockKeys], const float *alpha, int64_t c0) {
    using V = typename Vec::V;
    V o[NR][G]; // this block's sum alone, added to the rescaled earlier sum at the end (see add_block_sum)
    for (int r = 0; r < NR; ++r)
        for (int u = 0; u < G; ++u) o[r][u] = Vec::zero();
    // Keys in order (so a row's sum never depends on what other rows see); a key every row sees takes plain FMAs.
    for (KeyBits b = keys; b; b &= b - 1) {
        const int j = __builtin_ctzll(b);
        const unsigned char *vrow = pf.v(a, j0 + j);
        if constexpr (PrefetchV) prefetch_row(pf.v_ahead_of(a, vrow, j0 + j), pf.v_bytes, pf.to_l1);
        V vv[G];
        for (int u = 0; u < G; ++u) vv[u] = load_row_chunk<Vec, VT>(vrow, c0 + u);
        if ((all_rows >> j) & 1u) {
            for (int r = 0; r < NR; ++r) {
                const V pv = Vec::set1(p[r][j]);
                for (int u = 0; u < G; ++u) o[r][u] = Vec::fma(pv, vv[u], o[r][u]);
            }
        } else {
            for (int r = 0; r < NR; ++r) {
                // A hidden key must not touch the row at all (0 * NaN is NaN): select, do not multiply by zero.
                const uint32_t seen = (vis[r] >> j) & 1u ? ~0u : 0u;
                const V pv = Vec::set1(seen ? p[r][j] : 0.0f);
                for (int u = 0; u < G; ++u) o[r][u] = Vec::blend(seen, o[r][u], Vec::fma(pv, vv[u], o[r][u]));
            }
        }
    }
    add_block_sum<Vec, NR, G>(a, acc, o, alpha, c0);
}

// The n_chunks vectors of DV in passes of G vectors, then of 4 (when G is larger), then of 1: pass<g, first>(c0)
// takes vectors c0 .. c0 + g - 1, and only the first pass (first = true) asks for the rows ahead.
template <int G, class Pass> void dv_passes(int64_t n_chunks, Pass pass) {
    int64_t c0 = 0;
    auto passes_of = [&]<int g>() {
        for (; c0 + g <= n_chunks; c0 += g) {
            if (c0 == 0) pass.template operator()<g, true>(c0);
            else pass.template operator()<g, false>(c0);
        }
    };
    passes_of.template operator()<G>();
    if constexpr (G > 4) passes_of.template operator()<4>();
    passes_of.template operator()<1>();
}

template <class Vec, int NR, fst_type VT, class Rows>
void block_values(const ChunkArgs &a, const Rows &pf, float *acc, int64_t j0, KeyBits keys, const KeyBits *vis,
                  const float p[][kBlockKeys], const float *alpha) {
    constexpr int G = pv_chunks<Vec, VT>();
    const int64_t n_chunks = a.DV / Vec::W;
    KeyBits all_rows = keys;
    for (int r = 0; r < NR; ++r) all_rows &= vis[r];
    dv_passes<G>(n_chunks, [&]<int g, bool first>(int64_t c0) {
        values_group<Vec, NR, VT, g, first>(a, pf, acc, j0, keys, all_rows, vis, p, alpha, c0);
    });
}

// Rows 0..NR-1 of acc, p and alpha (the caller offsets them to reach other rows); PrefetchV: this pass asks for the
// V rows ahead (one pass per block does). A template parameter, so that each pass is its own loop (GCC 12 cloned
// it per value on its own, until the function gained the Short variants).
// With `keys` (Short only): the n_keys keys at those block positions, as block_logits_full takes them.
template <class Vec, int NR, fst_type VT, int G, bool Short, bool PrefetchV, class Rows>
void values_group_full(const ChunkArgs &a, const Rows &pf, float *acc, int64_t j0, int n_keys,
                       const float p[][kBlockKeys], const float *alpha, int64_t c0, const int *keys) {
    const int nb = Short ? n_keys : kBlockKeys;
    using V = typename Vec::V;
    V o[NR][G]; // this block's sum alone, added to the rescaled earlier sum at the end (see add_block_sum)
    for (int r = 0; r < NR; ++r)
        for (int u = 0; u < G; ++u) o[r][u] = Vec::zero();
    auto key = [&](int j) { return Short && keys ? keys[j] : j; }; // the block position of the j-th key
    auto row = [&](int j) { return pf.v(a, j0 + key(j)); };
    // A row's G vectors are loaded, then each row's weight multiplies them all (G vectors and one weight in
    // registers); or, when that holds more registers than NR x G sums, NR weights and one vector (a whole 128-wide
    // row in one pass, G = 8), the row goes into all rows' sums a vector at a time. Quantized rows keep their blocks
    // prepared a row ahead (block_prep) unless a pass is a whole row (G = 8: those would not fit); then a block
    // (two vectors) at a time.
    constexpr bool by_chunk = wide_type(VT) ? NR < G : G >= 8;
    constexpr bool prepped = G % 2 == 0 && !wide_type(VT) && !by_chunk; // quantized rows: blocks prepared a row ahead (block_prep)
    V prep[G / 2 + 1];
    if constexpr (prepped)
        for (int u = 0; u < G; u += 2) prep[u / 2] = block_prep<Vec, VT>(row(0), c0 + u);
    for (int j = 0; j < nb; ++j) {
        const unsigned char *vrow = row(j);
        if constexpr (PrefetchV) prefetch_row(pf.v_ahead_of(a, vrow, j0 + key(j)), pf.v_bytes, pf.to_l1);
        if constexpr (by_chunk && wide_type(VT)) {
            V pv[NR];
            for (int r = 0; r < NR; ++r) pv[r] = Vec::set1(p[r][key(j)]);
            for (int u = 0; u < G; ++u) {
                const V v = load_row_chunk<Vec, VT>(vrow, c0 + u);
                for (int r = 0; r < NR; ++r) o[r][u] = Vec::fma(pv[r], v, o[r][u]);
            }
        } else if constexpr (by_chunk) { // a quantized block: two vectors sharing a load and a scale
            V pv[NR];
            for (int r = 0; r < NR; ++r) pv[r] = Vec::set1(p[r][key(j)]);
            for (int u = 0; u < G; u += 2) {
                V lo, hi;
                load_row_pair<Vec, VT>(vrow, c0 + u, lo, hi);
                for (int r = 0; r < NR; ++r) {
                    o[r][u] = Vec::fma(pv[r], lo, o[r][u]);
                    o[r][u + 1] = Vec::fma(pv[r], hi, o[r][u + 1]);
                }
            }
        } else {
            V vv[G];
            if constexpr (prepped) {
                const unsigned char *next = j + 1 < nb ? row(j + 1) : vrow; // at the end: unused
                for (int u = 0; u < G; u += 2) {
                    load_row_pair<Vec, VT>(vrow, c0 + u, prep[u / 2], vv[u], vv[u + 1]);
                    prep[u / 2] = block_prep<Vec, VT>(next, c0 + u);
                }
            } else if constexpr (G % 2 == 0) {
                for (int u = 0; u < G; u += 2) load_row_pair<Vec, VT>(vrow, c0 + u, vv[u], vv[u + 1]);
            } else {
                for (int u = 0; u < G; ++u) vv[u] = load_row_chunk<Vec, VT>(vrow, c0 + u);
            }
            for (int r = 0; r < NR; ++r) {
                const V pv = Vec::set1(p[r][key(j)]);
                for (int u = 0; u < G; ++u) o[r][u] = Vec::fma(pv, vv[u], o[r][u]);
            }
        }
    }
    add_block_sum<Vec, NR, G>(a, acc, o, alpha, c0);
}

template <class Vec, int NR, fst_type VT, bool Short, class Rows>
void block_values_full(const ChunkArgs &a, const Rows &pf, float *acc, int64_t j0, int nb,
                       const float p[][kBlockKeys], const float *alpha, const int *keys = nullptr) {
    constexpr int G = pv_chunks<Vec, VT>();
    const int64_t n_chunks = a.DV / Vec::W;
    // Each pass takes every row of the group over G vectors of DV, so each V element is converted once. (F16 rows at
    // DV = 128 were once read whole for two rows at a time, converted twice: no faster from DRAM since 1024-key spans,
    // and 4 % slower in the caches; docs/PERFORMANCE.md, session 12.)
    dv_passes<G>(n_chunks, [&]<int g, bool first>(int64_t c0) {
        values_group_full<Vec, NR, VT, g, Short, first>(a, pf, acc, j0, nb, p, alpha, c0, keys);
    });
}

} // namespace
} // namespace fst::kernels::simd
