// The decode kernel's logits: q_r . k_j for the rows of a row group and the keys of a 64-key block, each K row
// read and converted once for all the group's rows. Per key for blocks whose rows see different keys; straight-line
// over the block, kQkKeys keys per reduction tree, when every row sees the same keys (decode's common case).
// Part of the SIMD kernel (attend_simd.h).
#pragma once

#include "kernels/simd/rows.h"

#include <cstdint>
#include <type_traits>

namespace fst::kernels::simd {
// Internal linkage: each ISA's file gets its own copies (see rows.h).
namespace {

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
    // Contiguous rows: the block's first. (Paged rows come from pf.k: a pool whose pages hold one key may have any
    // row stride, and no pointer is formed from it.)
    const unsigned char *k0 = Rows::kPaged ? nullptr : a.k + size_t(j0) * a.k_stride;
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

} // namespace
} // namespace fst::kernels::simd
