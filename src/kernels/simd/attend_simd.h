// The SIMD attention kernel, written once over a vector-operations struct (Vec: AVX2 or AVX-512) and compiled
// per ISA by kernels/<isa>/attend_<isa>.cpp, each in its own namespace, with that ISA's flags.
//
// Work of one call: n_rows query rows (at most 4 at a time: "row groups") against up to kChunkKeys keys of one KV
// head, in blocks of 64 keys. Each K and V row of a block is read and converted (F16/BF16 widened, Q8_0/Q4_0
// dequantized) in registers once per row group and used for all its rows — in decode a row group is the GQA
// group, so each KV row is read once for all of its query heads. Per block: logits for all (row, key) pairs
// (logits.h), one online-softmax rescale per row (softmax.h), then the weighted V sum (values.h). A block every
// row sees whole (decode, the inside of a causal range, also a short block: a small segment's or the cache's last
// keys) takes straight-line code; the others test visibility per key. Blocks are taken in spans of up to
// kSpanBlocks (logits, softmax, V sums), over one chunk or, through attend_chunks, over several chunks of the same
// rows (consecutive chunks of a long segment, or a multi-segment call's short segments). Many rows (prefill) take
// attend_lanes.h instead. Software prefetch goes row by row (rows.h's prefetch_row): bursts of prefetches at the top
// of each block stalled the core on fill buffers (perf: ~20 % of decode time on the prefetch instructions).
#pragma once

#include "kernels/kernel.h"
#include "kernels/simd/logits.h"
#include "kernels/simd/rows.h"
#include "kernels/simd/softmax.h"
#include "kernels/simd/values.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace fst::kernels::simd {
// Internal linkage: each ISA's file gets its own copies (see rows.h).
namespace {

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
    const size_t lanes = lanes_scratch_floats<Vec>(D, DV);
    return lanes > kSpanLogitsFloats ? lanes : kSpanLogitsFloats;
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
