// The SIMD attention kernel, written once over a vector-operations struct (Vec: AVX2 or AVX-512) and compiled
// per ISA by kernels/<isa>/attend_<isa>.cpp, each in its own namespace, with that ISA's flags.
//
// Work of one call: n_rows query rows (at most 4 at a time: "row groups") against up to kChunkKeys keys of one KV
// head, in blocks of 64 keys. Each K and V row of a block is read and converted (F16/BF16 widened, Q8_0/Q4_0
// dequantized) in registers once per row group and used for all its rows — in decode a row group is the GQA
// group, so each KV row is read once for all of its query heads. Per block: logits for all (row, key) pairs,
// one online-softmax rescale per row, then the weighted V sum. A block every row sees whole (decode, the inside of
// a causal range, also a short block: a small segment's or the cache's last keys) takes straight-line code; the
// others test visibility per key. Blocks are taken in spans of up to 16 (logits, softmax, V sums), over one chunk or,
// through attend_chunks, over several short chunks of the same rows (a multi-segment call's short segments).
// Software prefetch goes row by row (see prefetch_row): bursts of prefetches at the top of each block stalled the
// core on fill buffers (perf: ~20 % of decode time on the prefetch instructions).
#pragma once

#include "kernels/kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

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
    const unsigned char *k_ahead_of(const ChunkArgs &a, const unsigned char *row, int64_t j) const {
        if constexpr (Paged) return j + k_keys < a.paged_keys ? k(a, j + k_keys) : row;
        else return row + k_ahead;
    }
    const unsigned char *v_ahead_of(const ChunkArgs &a, const unsigned char *row, int64_t j) const {
        if constexpr (Paged) return j + v_keys < a.paged_keys ? v(a, j + v_keys) : row;
        else return row + v_ahead;
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

// Raw dot products x[r][j] = q_r . k_j for the keys of `keys` (a bit set over the block) and NR rows.
template <class Vec, int NR, fst_type KT, class Rows>
void block_logits(const ChunkArgs &a, const Rows &pf, const float *q, int64_t j0, KeyBits keys, float x[][kBlockKeys]) {
    using V = typename Vec::V;
    constexpr int K = Vec::kQkKeys;
    const int64_t n_chunks = a.D / Vec::W;
    int idx[kBlockKeys];
    int n = 0;
    for (KeyBits b = keys; b; b &= b - 1) idx[n++] = __builtin_ctzll(b);
    for (int t = 0; t < n; t += K) {
        const int nk = K < n - t ? K : n - t;
        const unsigned char *krow[K];
        for (int u = 0; u < K; ++u) krow[u] = pf.k(a, j0 + idx[t + (u < nk ? u : nk - 1)]);
        for (int u = 0; u < nk; ++u) prefetch_row(pf.k_ahead_of(a, krow[u], j0 + idx[t + u]), pf.k_bytes, pf.to_l1); // as the full path
        V acc[K][kRowsPerGroup];
        for (int u = 0; u < K; ++u)
            for (int r = 0; r < kRowsPerGroup; ++r) acc[u][r] = Vec::zero();
        for (int64_t c = 0; c < n_chunks; ++c) {
            V qv[NR];
            for (int r = 0; r < NR; ++r) qv[r] = pinned_load<Vec>(q + r * a.D + c * Vec::W);
            for (int u = 0; u < K; ++u) {
                const V kv = load_row_chunk<Vec, KT>(krow[u], c);
                for (int r = 0; r < NR; ++r) acc[u][r] = Vec::fma(qv[r], kv, acc[u][r]);
            }
        }
        for (int u = 0; u < nk; ++u) {
            float sums[4];
            Vec::reduce4(acc[u][0], acc[u][1], acc[u][2], acc[u][3], sums);
            for (int r = 0; r < NR; ++r) x[r][idx[t + u]] = sums[r];
        }
    }
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

template <class Vec, int NR, fst_type VT, class Rows>
void block_values(const ChunkArgs &a, const Rows &pf, float *acc, int64_t j0, KeyBits keys, const KeyBits *vis,
                  const float p[][kBlockKeys], const float *alpha) {
    constexpr int G = wide_type(VT) ? Vec::kPvChunksWide : Vec::kPvChunks;
    const int64_t n_chunks = a.DV / Vec::W;
    KeyBits all_rows = keys;
    for (int r = 0; r < NR; ++r) all_rows &= vis[r];
    int64_t c0 = 0; // the first pass asks for the rows ahead, as block_values_full's does
    if (n_chunks >= G) {
        values_group<Vec, NR, VT, G, true>(a, pf, acc, j0, keys, all_rows, vis, p, alpha, 0);
        c0 = G;
    } else {
        values_group<Vec, NR, VT, 1, true>(a, pf, acc, j0, keys, all_rows, vis, p, alpha, 0);
        c0 = 1;
    }
    for (; c0 + G <= n_chunks; c0 += G) values_group<Vec, NR, VT, G, false>(a, pf, acc, j0, keys, all_rows, vis, p, alpha, c0);
    for (; c0 < n_chunks; ++c0) values_group<Vec, NR, VT, 1, false>(a, pf, acc, j0, keys, all_rows, vis, p, alpha, c0);
}

// Fast path for the first nb keys of a block when every row sees all of them (the common case of decode, and the
// short blocks of small segments or a cache's last keys): straight-line code without per-key visibility tests.
// Logits are reduced kQkKeys keys at a time by one reduction tree; past nb, a group repeats key nb - 1 (never a row
// outside the chunk), and the softmax masks those lanes out. Whole blocks (Short = false) keep their compile-time
// key count (a run-time count for every block measured 4-8 % slower, kernel alone). With `keys` (Short only), the
// n_keys keys are those block positions, which every row sees while the others see none of them (a mask hiding
// other sequences' cells): the same code over the visible keys, each logit stored at its key's position.
template <class Vec, int NR, fst_type KT, bool Short, class Rows>
void block_logits_full(const ChunkArgs &a, const Rows &pf, const float *q, int64_t j0, int n_keys, float x[][kBlockKeys],
                       const int *keys = nullptr) {
    const int nb = Short ? n_keys : kBlockKeys;
    using V = typename Vec::V;
    constexpr int K = Vec::kQkKeys;
    const int64_t n_chunks = a.D / Vec::W;
    const unsigned char *k0 = a.k + size_t(j0) * a.k_stride; // contiguous rows: the block's first
    for (int t = 0; t < nb; t += K) {
        const unsigned char *krow[K];
        for (int u = 0; u < K; ++u) {
            const int i = !Short || t + u < nb ? t + u : nb - 1;
            const int64_t j = keys ? keys[i] : i;
            krow[u] = Rows::kPaged ? pf.k(a, j0 + j) : k0 + size_t(j) * a.k_stride;
            prefetch_row(pf.k_ahead_of(a, krow[u], j0 + j), pf.k_bytes, pf.to_l1);
        }
        V acc[K][4];
        for (int u = 0; u < K; ++u)
            for (int r = 0; r < 4; ++r) acc[u][r] = Vec::zero();
        // Q's chunks are loaded into registers once for the K keys and pinned there (see pinned_load).
        int64_t c = 0;
        if constexpr (Vec::kQkPairs) {
            V prep[K]; // quantized K: each key's next block prepared one block ahead (see block_prep)
            if constexpr (!wide_type(KT))
                for (int u = 0; u < K; ++u) prep[u] = block_prep<Vec, KT>(krow[u], 0);
            auto step = [&](int64_t c, int64_t c_next, auto prepare_next) {
                V q_lo[NR], q_hi[NR];
                for (int r = 0; r < NR; ++r) {
                    q_lo[r] = pinned_load<Vec>(q + r * a.D + c * Vec::W);
                    q_hi[r] = pinned_load<Vec>(q + r * a.D + (c + 1) * Vec::W);
                }
                for (int u = 0; u < K; ++u) {
                    V k_lo, k_hi;
                    if constexpr (wide_type(KT)) {
                        load_row_pair<Vec, KT>(krow[u], c, k_lo, k_hi);
                    } else {
                        load_row_pair<Vec, KT>(krow[u], c, prep[u], k_lo, k_hi);
                        if constexpr (prepare_next) prep[u] = block_prep<Vec, KT>(krow[u], c_next);
                    }
                    for (int r = 0; r < NR; ++r) {
                        acc[u][r] = Vec::fma(q_lo[r], k_lo, acc[u][r]);
                        acc[u][r] = Vec::fma(q_hi[r], k_hi, acc[u][r]);
                    }
                }
            };
            // Two forms of the same loop, chosen per type by measurement (GCC 12, Zen 5, kernel alone;
            // docs/PERFORMANCE.md): the last pair taken apart (no block after it to prepare) suits F16 and Q4_0, by
            // 5 % and 3 %; one loop that prepares the last block again (unused) suits Q8_0, by 6 %.
            if constexpr (KT == FST_TYPE_Q8_0) {
                for (; c + 2 <= n_chunks; c += 2) step(c, c + 2 < n_chunks ? c + 2 : c, std::true_type{});
            } else {
                for (; c + 2 < n_chunks; c += 2) step(c, c + 2, std::true_type{});
                if (c + 2 == n_chunks) {
                    step(c, c, std::false_type{});
                    c += 2;
                }
            }
        }
        if constexpr (!Vec::kQkPairs && !wide_type(KT)) {
            // Quantized K a chunk at a time: each key's block scale is converted once for the block's chunks.
            constexpr int64_t kChunksPerBlock = 32 / Vec::W;
            for (; c < n_chunks; c += kChunksPerBlock) {
                V d[K];
                for (int u = 0; u < K; ++u) d[u] = Vec::block_scale_v(krow[u] + (c / kChunksPerBlock) * row_bytes<KT>(32));
                for (int64_t i = c; i < c + kChunksPerBlock; ++i) {
                    V qv[NR];
                    for (int r = 0; r < NR; ++r) qv[r] = pinned_load<Vec>(q + r * a.D + i * Vec::W);
                    for (int u = 0; u < K; ++u) {
                        const V kv = load_scaled_chunk<Vec, KT>(krow[u], i, d[u]);
                        for (int r = 0; r < NR; ++r) acc[u][r] = Vec::fma(qv[r], kv, acc[u][r]);
                    }
                }
            }
        }
        for (; c < n_chunks; ++c) { // all chunks without kQkPairs, else an odd last one (F32/F16/BF16 only)
            V qv[NR];
            for (int r = 0; r < NR; ++r) qv[r] = pinned_load<Vec>(q + r * a.D + c * Vec::W);
            for (int u = 0; u < K; ++u) {
                const V kv = load_row_chunk<Vec, KT>(krow[u], c);
                for (int r = 0; r < NR; ++r) acc[u][r] = Vec::fma(qv[r], kv, acc[u][r]);
            }
        }
        if (keys == nullptr) {
            Vec::reduce_keys(acc, &x[0][t], kBlockKeys); // rows >= NR get zeros, never read
        } else {
            float sums[4][K];
            Vec::reduce_keys(acc, &sums[0][0], K);
            for (int r = 0; r < NR; ++r)
                for (int u = 0; u < K && t + u < nb; ++u) x[r][keys[t + u]] = sums[r][u];
        }
    }
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
    constexpr bool prepped = G % 2 == 0 && !wide_type(VT); // quantized rows: blocks prepared a row ahead (block_prep)
    V prep[G / 2 + 1];
    if constexpr (prepped)
        for (int u = 0; u < G; u += 2) prep[u / 2] = block_prep<Vec, VT>(row(0), c0 + u);
    for (int j = 0; j < nb; ++j) {
        const unsigned char *vrow = row(j);
        if constexpr (PrefetchV) prefetch_row(pf.v_ahead_of(a, vrow, j0 + key(j)), pf.v_bytes, pf.to_l1);
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
    add_block_sum<Vec, NR, G>(a, acc, o, alpha, c0);
}

template <class Vec, int NR, fst_type VT, bool Short, class Rows>
void block_values_full(const ChunkArgs &a, const Rows &pf, float *acc, int64_t j0, int nb,
                       const float p[][kBlockKeys], const float *alpha, const int *keys = nullptr) {
    constexpr int G = wide_type(VT) ? Vec::kPvChunksWide : Vec::kPvChunks;
    const int64_t n_chunks = a.DV / Vec::W;
    // Each pass takes every row of the group over G vectors of DV, so each V element is converted once. (F16 rows at
    // DV = 128 were once read whole for two rows at a time, converted twice: no faster from DRAM since 1024-key spans,
    // and 4 % slower in the caches; docs/PERFORMANCE.md, session 12.) The first pass prefetches the rows ahead.
    int64_t c0 = 0;
    if (n_chunks >= G) {
        values_group_full<Vec, NR, VT, G, Short, true>(a, pf, acc, j0, nb, p, alpha, 0, keys);
        c0 = G;
    } else {
        values_group_full<Vec, NR, VT, 1, Short, true>(a, pf, acc, j0, nb, p, alpha, 0, keys);
        c0 = 1;
    }
    for (; c0 + G <= n_chunks; c0 += G) values_group_full<Vec, NR, VT, G, Short, false>(a, pf, acc, j0, nb, p, alpha, c0, keys);
    for (; c0 < n_chunks; ++c0) values_group_full<Vec, NR, VT, 1, Short, false>(a, pf, acc, j0, nb, p, alpha, c0, keys);
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

// Blocks go up to kSpanBlocks at a time (a span: a whole chunk, or the short chunks of several segments): the
// logits of all of them, then each one's softmax, then the weighted V sums in block order (each block's alpha
// rescales what the blocks of its chunk before it added, as when they are taken one by one). K and V are then read
// in long runs of rows rather than alternating every 64, which the hardware prefetcher follows better (runs of 256
// against 64, then of 1024 against 256: docs/PERFORMANCE.md). Which blocks share a span never changes a result:
// every block's arithmetic touches only its own chunk's state, in the chunk's block order.
constexpr int kSpanBlocks = int(kSpanChunks * kChunkKeys / kBlockKeys);

// A span's logits (then weights) per block, row and key: 64 KiB, in the kernel scratch rather than on the stack of
// whatever thread a host engine drives a call part from. 64-byte aligned within it.
using SpanLogits = float[kRowsPerGroup][kBlockKeys];
constexpr size_t kSpanLogitsFloats = size_t(kSpanBlocks) * kRowsPerGroup * kBlockKeys + 16;
inline SpanLogits *span_logits(float *scratch) {
    const uintptr_t p = (reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63);
    return reinterpret_cast<SpanLogits *>(p);
}

// Keys [j_begin, j_end) of one chunk (j_begin block-aligned) for a row group, continuing the chunk's m, s and acc.
struct KeyRange {
    const ChunkArgs *a;
    int64_t j_begin, j_end;
};

// Whether rows 0..n-1 all see exactly the keys `any` (their union).
inline bool same_keys_every_row(const KeyBits *vis, int n, KeyBits any) {
    for (int r = 0; r < n; ++r)
        if (vis[r] != any) return false;
    return true;
}

// Row group r0 (the same rows in every range) over the ranges in order.
template <class Vec, int NR, fst_type KT, fst_type VT, bool Paged>
void attend_rows(const KeyRange *ranges, int n_ranges, int64_t r0) {
    struct Block {
        const ChunkArgs *a;
        int64_t j0;
        int nb;                           // keys in the block
        KeyBits vis[kRowsPerGroup], any;
        bool full;
        float alpha[kRowsPerGroup];
    };
    Block blocks[kSpanBlocks];
    SpanLogits *w = span_logits(ranges[0].a->scratch); // logits, then weights
    int n_blocks = 0;
    auto finish_span = [&] {
        for (int i = 0; i < n_blocks; ++i) {
            Block &b = blocks[i];
            block_softmax<Vec, NR>(*b.a, r0, b.j0, b.nb, b.vis, w[i], b.alpha);
            for (int r = 0; r < NR; ++r) b.full = b.full && b.vis[r] == low_bits(b.nb); // a row whose logits are all -inf drops out
        }
        for (int i = 0; i < n_blocks; ++i) {
            const Block &b = blocks[i];
            const ChunkArgs &a = *b.a;
            float *acc = a.acc + r0 * a.DV;
            if (b.full && b.nb == kBlockKeys) block_values_full<Vec, NR, VT, false>(a, row_access<KT, VT, Paged>(a), acc, b.j0, b.nb, w[i], b.alpha);
            else if (b.full) block_values_full<Vec, NR, VT, true>(a, row_access<KT, VT, Paged>(a), acc, b.j0, b.nb, w[i], b.alpha);
            else if (same_keys_every_row(b.vis, NR, b.any)) { // the keys block_logits_full took by position
                int keys[kBlockKeys];
                int n = 0;
                for (KeyBits k = b.any; k; k &= k - 1) keys[n++] = __builtin_ctzll(k);
                block_values_full<Vec, NR, VT, true>(a, row_access<KT, VT, Paged>(a), acc, b.j0, n, w[i], b.alpha, keys);
            } else
                block_values<Vec, NR, VT>(a, row_access<KT, VT, Paged>(a), acc, b.j0, b.any, b.vis, w[i], b.alpha);
        }
        n_blocks = 0;
    };
    for (int g = 0; g < n_ranges; ++g) {
        const ChunkArgs &a = *ranges[g].a;
        const float *q = a.q + r0 * a.D;
        const Rows<Paged> pf = row_access<KT, VT, Paged>(a);
        for (int64_t j0 = ranges[g].j_begin; j0 < ranges[g].j_end; j0 += kBlockKeys) {
            const int nb = int(min64(kBlockKeys, ranges[g].j_end - j0));
            Block &b = blocks[n_blocks];
            // Which keys of the block each row sees.
            b.a = &a;
            b.j0 = j0;
            b.nb = nb;
            b.any = 0;
            for (int r = 0; r < kRowsPerGroup; ++r) b.vis[r] = 0;
            for (int r = 0; r < NR; ++r) {
                const int64_t lo = max64(a.lo[r0 + r] - j0, 0), hi = min64(a.hi[r0 + r] - j0, nb);
                KeyBits bits = hi > lo ? low_bits(hi) & ~low_bits(lo) : 0;
                if (a.bias) bits &= ~neg_inf_keys<Vec>(a.bias + (r0 + r) * a.bias_stride + j0, bits, hi);
                b.vis[r] = bits;
                b.any |= bits;
            }
            if (b.any == 0) continue;
            b.full = true;
            for (int r = 0; r < NR; ++r) b.full = b.full && b.vis[r] == low_bits(nb);
            if (b.full && nb == kBlockKeys) block_logits_full<Vec, NR, KT, false>(a, pf, q, j0, nb, w[n_blocks]);
            else if (b.full) block_logits_full<Vec, NR, KT, true>(a, pf, q, j0, nb, w[n_blocks]);
            else if (same_keys_every_row(b.vis, NR, b.any)) {
                int keys[kBlockKeys];
                int n = 0;
                for (KeyBits k = b.any; k; k &= k - 1) keys[n++] = __builtin_ctzll(k);
                block_logits_full<Vec, NR, KT, true>(a, pf, q, j0, n, w[n_blocks], keys);
            } else
                block_logits<Vec, NR, KT>(a, pf, q, j0, b.any, w[n_blocks]);
            if (++n_blocks == kSpanBlocks) finish_span();
        }
    }
    finish_span();
}

template <class Vec, int NR, fst_type KT, bool Paged> void attend_rows_v(const KeyRange *ranges, int n_ranges, int64_t r0) {
    switch (ranges[0].a->v_type) {
    case FST_TYPE_F32: return attend_rows<Vec, NR, KT, FST_TYPE_F32, Paged>(ranges, n_ranges, r0);
    case FST_TYPE_F16: return attend_rows<Vec, NR, KT, FST_TYPE_F16, Paged>(ranges, n_ranges, r0);
    case FST_TYPE_BF16: return attend_rows<Vec, NR, KT, FST_TYPE_BF16, Paged>(ranges, n_ranges, r0);
    case FST_TYPE_Q8_0: return attend_rows<Vec, NR, KT, FST_TYPE_Q8_0, Paged>(ranges, n_ranges, r0);
    default: return attend_rows<Vec, NR, KT, FST_TYPE_Q4_0, Paged>(ranges, n_ranges, r0);
    }
}

// The ranges' chunks share their rows (n_rows, q), their K and V types and whether their rows are paged.
template <class Vec> void attend_rows_kv(const KeyRange *ranges, int n_ranges, int64_t r0) {
    const ChunkArgs &a = *ranges[0].a;
    auto with_types = [&]<int NR, bool Paged>() {
        switch (a.k_type) {
        case FST_TYPE_F32: return attend_rows_v<Vec, NR, FST_TYPE_F32, Paged>(ranges, n_ranges, r0);
        case FST_TYPE_F16: return attend_rows_v<Vec, NR, FST_TYPE_F16, Paged>(ranges, n_ranges, r0);
        case FST_TYPE_BF16: return attend_rows_v<Vec, NR, FST_TYPE_BF16, Paged>(ranges, n_ranges, r0);
        case FST_TYPE_Q8_0: return attend_rows_v<Vec, NR, FST_TYPE_Q8_0, Paged>(ranges, n_ranges, r0);
        default: return attend_rows_v<Vec, NR, FST_TYPE_Q4_0, Paged>(ranges, n_ranges, r0);
        }
    };
    auto with_rows = [&]<int NR>() {
        if (a.k_pages != nullptr) return with_types.template operator()<NR, true>();
        return with_types.template operator()<NR, false>();
    };
    switch (min64(kRowsPerGroup, a.n_rows - r0)) {
    case 1: return with_rows.template operator()<1>();
    case 2: return with_rows.template operator()<2>();
    case 3: return with_rows.template operator()<3>();
    default: return with_rows.template operator()<4>();
    }
}

} // namespace
} // namespace fst::kernels::simd

#include "kernels/simd/attend_lanes.h"

namespace fst::kernels::simd {
namespace {

// Few rows (decode: a GQA group, or a few query positions as in speculative decoding): row groups of 4 with K/V
// converted in registers, each group reading the chunk's K/V again from L1/L2. Many rows (prefill): rows as vector
// lanes. The row groups win up to 24 rows (Zen 5, 32k cache, 32/8 heads: F16 n_q 3 / 4 / 5 / 6, i.e. 12-24 rows,
// 2.2x / 2x / 1.5x / 1.4x faster than lanes; Q8_0 and Q4_0 alike, AVX2 too); at 32 rows lanes are as fast or faster.
constexpr int64_t kMaxDecodeRows = 24;
// With several row groups, each re-reads the keys the group before it read: they go over the chunk 256 keys at a
// time (128 KiB of F16 K/V at D = 128, which stays in any L2) rather than one whole chunk after the other.
constexpr int64_t kGroupStepKeys = 256;

template <class Vec> void start_chunk(const ChunkArgs &a) {
    for (int64_t i = 0; i < a.n_rows; ++i) {
        a.m[i] = -std::numeric_limits<float>::infinity();
        a.s[i] = 0.0f;
        for (int64_t c = 0; c < a.DV; ++c) a.acc[i * a.DV + c] = 0.0f;
    }
}

template <class Vec> void attend_chunk(const ChunkArgs &a) {
    if (a.n_rows > kMaxDecodeRows) return attend_lanes_kv<Vec>(a);
    start_chunk<Vec>(a);
    const int64_t step = a.n_rows > kRowsPerGroup ? kGroupStepKeys : a.n_keys;
    for (int64_t j = 0; j < a.n_keys; j += step) {
        const KeyRange range{&a, j, min64(j + step, a.n_keys)};
        for (int64_t r0 = 0; r0 < a.n_rows; r0 += kRowsPerGroup) attend_rows_kv<Vec>(&range, 1, r0);
    }
}

// Short chunks of one row group (the short segments of a multi-segment call) go through the kernel together, so
// that their K and V rows are read in long runs as one long chunk's are; each keeps its own state, so the results
// are those of attend_chunk on each (docs/PERFORMANCE.md). Other rows, or mixed types, take them one at a time.
template <class Vec> void attend_chunks(const ChunkArgs *chunks, int n) {
    bool together = n > 1 && n <= kMaxBatchChunks && chunks[0].n_rows <= kRowsPerGroup;
    for (int i = 1; i < n && together; ++i)
        together = chunks[i].k_type == chunks[0].k_type && chunks[i].v_type == chunks[0].v_type &&
                   (chunks[i].k_pages == nullptr) == (chunks[0].k_pages == nullptr);
    if (!together) {
        for (int i = 0; i < n; ++i) attend_chunk<Vec>(chunks[i]);
        return;
    }
    KeyRange ranges[kMaxBatchChunks];
    for (int i = 0; i < n; ++i) {
        start_chunk<Vec>(chunks[i]);
        ranges[i] = KeyRange{&chunks[i], 0, chunks[i].n_keys};
    }
    attend_rows_kv<Vec>(ranges, n, 0);
}

// Rows as lanes (prefill) or row groups (decode): a call takes one or the other, so they share the scratch.
template <class Vec> size_t scratch_floats(int64_t D, int64_t DV, int64_t) {
    return std::max(lanes_scratch_floats<Vec>(D, DV), kSpanLogitsFloats);
}

// D and DV must be whole vectors (and quantized rows whole blocks, which validation already ensures).
template <class Vec> bool supports(int64_t D, int64_t DV) { return D % Vec::W == 0 && DV % Vec::W == 0; }

template <class Vec> void f16_row_to_f32(const void *x, float *y, int64_t n) {
    const unsigned char *bytes = static_cast<const unsigned char *>(x);
    int64_t i = 0;
    for (; i + Vec::W <= n; i += Vec::W) Vec::store(y + i, Vec::load_f16(bytes + 2 * i, 0));
    if (i < n) { // the tail through a zero-padded vector
        alignas(64) unsigned char t[2 * Vec::W] = {};
        alignas(64) float f[Vec::W];
        for (int64_t j = 2 * i; j < 2 * n; ++j) t[j - 2 * i] = bytes[j];
        Vec::store(f, Vec::load_f16(t, 0));
        for (int64_t j = i; j < n; ++j) y[j] = f[j - i];
    }
}

// Explicit multiplies and an add, never an FMA: the same bits as merge_state's scalar loop (state/merge.h).
template <class Vec> void combine_rows(float *y, float a, const float *x, float b, int64_t n) {
    const typename Vec::V av = Vec::set1(a), bv = Vec::set1(b);
    int64_t i = 0;
    for (; i + Vec::W <= n; i += Vec::W) Vec::store(y + i, Vec::add(Vec::mul(av, Vec::load(y + i)), Vec::mul(bv, Vec::load(x + i))));
    if (i < n) { // the tail through padded vectors (a scalar a * y + b * x here could be contracted into an FMA)
        alignas(64) float ty[Vec::W] = {}, tx[Vec::W] = {};
        for (int64_t j = i; j < n; ++j) ty[j - i] = y[j], tx[j - i] = x[j];
        Vec::store(ty, Vec::add(Vec::mul(av, Vec::load(ty)), Vec::mul(bv, Vec::load(tx))));
        for (int64_t j = i; j < n; ++j) y[j] = ty[j - i];
    }
}

template <class Vec> void scale_row(const float *x, float a, float *y, int64_t n) {
    const typename Vec::V av = Vec::set1(a);
    int64_t i = 0;
    for (; i + Vec::W <= n; i += Vec::W) Vec::store(y + i, Vec::mul(av, Vec::load(x + i)));
    for (; i < n; ++i) y[i] = a * x[i];
}

// y[i] = f(x[i]) a vector at a time; the tail through one zero-padded vector.
template <class Vec, class F> void map_array(const float *x, float *y, int64_t n, F f) {
    int64_t i = 0;
    for (; i + Vec::W <= n; i += Vec::W) Vec::store(y + i, f(Vec::load(x + i)));
    if (i < n) {
        alignas(64) float t[Vec::W] = {};
        for (int64_t k = i; k < n; ++k) t[k - i] = x[k];
        Vec::store(t, f(Vec::load(t)));
        for (int64_t k = i; k < n; ++k) y[k] = t[k - i];
    }
}
template <class Vec> void exp_array(const float *x, float *y, int64_t n) {
    map_array<Vec>(x, y, n, [](typename Vec::V v) { return Vec::exp(v); });
}
template <class Vec> void tanh_array(const float *x, float *y, int64_t n) {
    map_array<Vec>(x, y, n, [](typename Vec::V v) { return tanh_v<Vec>(v); });
}

} // namespace
} // namespace fst::kernels::simd
