#include "attention/tile.h"

#include "state/merge.h"
#include "tensor/types.h"

#include <algorithm>
#include <cstring>

namespace fst {

namespace {

int32_t load_i32(const unsigned char *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// Visible key range [lo, hi) of a row within chunk keys [j0, j0 + n), from the virtual mask when positions are
// start + index (with a kv_pos tensor the bias carries the virtual mask instead).
void visible_range(const AttnProblem &P, const Segment &S, int64_t q_pos, int64_t j0, int64_t n, int32_t &lo, int32_t &hi) {
    int64_t l = 0, h = n;
    const fst_attn_params &p = P.params;
    if (p.virtual_mask != FST_MASK_NONE && !S.has_kv_pos) {
        h = std::clamp<int64_t>(q_pos - S.kv_pos0 - j0 + 1, 0, n); // pos_k <= pos_q
        if (p.virtual_mask == FST_MASK_SLIDING_WINDOW)
            l = std::clamp<int64_t>(q_pos - p.window - S.kv_pos0 - j0 + 1, 0, n); // pos_q - pos_k < window
    }
    lo = int32_t(l);
    hi = int32_t(std::max(l, h));
}

const unsigned char *mask_row_of(const Segment &S, const RowInfo &ri) {
    return S.has_mask ? at(S.mask, ri.c.r, ri.c.h % S.mask.ne[2], ri.c.s % S.mask.ne[3]) : nullptr;
}

// bias[j] for keys [j0, j0 + n) of one row: -inf where a kv_pos-defined virtual mask hides the key, plus slope * mask.
void fill_bias(const AttnProblem &P, const Segment &S, const kernels::KernelTable &kernels, const RowInfo &ri,
               int64_t j0, int64_t n, float *bias) {
    const fst_attn_params &p = P.params;
    const unsigned char *mask_row = mask_row_of(S, ri);
    const unsigned char *kv_pos_col =
        S.has_kv_pos ? static_cast<const unsigned char *>(S.kv_pos.data) + size_t(ri.c.s % S.kv_pos.ne[1]) * S.kv_pos.nb[1]
                     : nullptr;
    if (mask_row && !kv_pos_col && S.mask.type == FST_TYPE_F16 && S.mask.nb[0] == 2) {
        // The common case (ggml's F16 mask, contiguous rows): a vector conversion, then the ALiBi slope.
        kernels.f16_row_to_f32(mask_row + size_t(j0) * 2, bias, n);
        // A positive slope keeps -inf as it is, so the vector multiply gives the same values as the test per key
        // (which was ~6 % of a prefill with llama.cpp's ALiBi mask). A slope that underflowed to 0 must not make NaN.
        if (ri.slope > 0.0f && ri.slope != 1.0f) kernels.scale_row(bias, ri.slope, bias, n);
        else if (ri.slope != 1.0f)
            for (int64_t j = 0; j < n; ++j) bias[j] = bias[j] == kNegInf ? kNegInf : ri.slope * bias[j];
        return;
    }
    if (!mask_row && kv_pos_col && p.virtual_mask != FST_MASK_NONE && S.kv_pos.nb[0] == 4) {
        // Positions alone, contiguous: visible iff first <= kpos <= last, both bounds brought into int32 range
        // (saturating, so that the test per key is two 32-bit compares a vector can do; a loop over int64 tests
        // made a 32k decode with a kv_pos tensor ~20 % slower than one with kv_pos0).
        const int64_t last = ri.q_pos;
        const int64_t first = p.virtual_mask == FST_MASK_SLIDING_WINDOW ? ri.q_pos - p.window + 1 : INT64_MIN;
        if (last < INT32_MIN || first > INT32_MAX || first > last) {
            std::fill(bias, bias + n, kNegInf);
            return;
        }
        const int32_t lo = int32_t(std::max<int64_t>(first, INT32_MIN)), hi = int32_t(std::min<int64_t>(last, INT32_MAX));
        for (int64_t j = 0; j < n; ++j) {
            int32_t kpos; // the tensor's data need not be 4-byte aligned
            std::memcpy(&kpos, kv_pos_col + size_t(j0 + j) * 4, 4);
            bias[j] = kpos >= lo && kpos <= hi ? 0.0f : kNegInf;
        }
        return;
    }
    for (int64_t j = 0; j < n; ++j) {
        if (kv_pos_col && p.virtual_mask != FST_MASK_NONE) {
            const int64_t kpos = load_i32(kv_pos_col + size_t(j0 + j) * S.kv_pos.nb[0]);
            if (kpos > ri.q_pos || (p.virtual_mask == FST_MASK_SLIDING_WINDOW && ri.q_pos - kpos >= p.window)) {
                bias[j] = kNegInf;
                continue;
            }
        }
        float x = 0.0f;
        if (mask_row) {
            const unsigned char *e = mask_row + size_t(j0 + j) * S.mask.nb[0];
            float mv;
            if (S.mask.type == FST_TYPE_F16) mv = f16_to_f32(load_u16(e));
            else std::memcpy(&mv, e, 4);
            x = mv == kNegInf ? kNegInf : ri.slope * mv;
        }
        bias[j] = x;
    }
}

// Whether every row of a tile gets the same bias from segment S: the same mask row (ggml's mask has ne[2] == 1, so
// the query heads of a decode tile's GQA group share it), the same ALiBi slope, the same positions.
bool rows_share_bias(const Segment &S, const RowInfo *rows, int64_t n) {
    for (int64_t i = 1; i < n; ++i) {
        if (rows[i].slope != rows[0].slope || mask_row_of(S, rows[i]) != mask_row_of(S, rows[0])) return false;
        if (S.has_kv_pos && (rows[i].q_pos != rows[0].q_pos || rows[i].c.s % S.kv_pos.ne[1] != rows[0].c.s % S.kv_pos.ne[1]))
            return false;
    }
    return true;
}

// The bias of a tile's rows for keys [j0, j0 + n) of segment S, row i at bias + i * row_stride; returns the row
// stride the kernel is to read them with: 0 when the rows share one bias row, which is then filled once (it was
// converted once per query head of a masked decode's GQA group, 2-5 % of its time).
int64_t fill_tile_bias(const AttnProblem &P, const Segment &S, const kernels::KernelTable &kernels, const RowInfo *rows,
                       int64_t n_rows, int64_t j0, int64_t n, float *bias, int64_t row_stride) {
    if (rows_share_bias(S, rows, n_rows)) {
        fill_bias(P, S, kernels, rows[0], j0, n, bias);
        return 0;
    }
    for (int64_t i = 0; i < n_rows; ++i) fill_bias(P, S, kernels, rows[i], j0, n, bias + i * row_stride);
    return row_stride;
}

// Keys one kernel call may take for K/V of these types when several chunks or short segments share it (kernel.h's
// kSpanChunks): quantized K/V measured 1-2 % slower with spans longer than a chunk (docs/PERFORMANCE.md, session 16).
int64_t span_keys(const Segment &S) {
    const bool wide = !type_is_quantized(S.k.type) && !type_is_quantized(S.v.type);
    return (wide ? kernels::kSpanChunks : 1) * kernels::kChunkKeys;
}

// The K and V rows of keys [j0, j0 + nk) of segment S for a tile's KV head and sequence: a.k and a.v; for a paged
// segment, the page holding the chunk (pages of a chunk or more: chunks start at multiples of kChunkKeys, so a
// chunk lies in one page), or the page pointers of the chunk's keys and of the keys after it that the kernels
// prefetch (shorter pages), in k_pages and v_pages (plan.chunk_pages each).
void set_chunk_rows(const Segment &S, const Tile &tile, int64_t j0, int64_t nk, const unsigned char **k_pages,
                    const unsigned char **v_pages, kernels::ChunkArgs &a) {
    if (!S.paged) {
        a.k = at(S.k, j0, tile.hk, tile.sk);
        a.v = at(S.v, j0, tile.hk, tile.sk);
        return;
    }
    const int64_t page_keys = int64_t(1) << S.page_shift;
    auto page = [&](int64_t i) { return load_i32(at(S.page_table, tile.sk, 0, 0) + size_t(i) * S.page_table.nb[0]); };
    if (page_keys >= kernels::kChunkKeys) {
        const int64_t p = page(j0 >> S.page_shift), row = j0 & (page_keys - 1);
        a.k = at(S.k, row, tile.hk, p);
        a.v = at(S.v, row, tile.hk, p);
        a.k_pages = a.v_pages = nullptr;
        return;
    }
    const int64_t covered = std::min(S.n_kv - j0, nk + kPagedAheadKeys);
    const int64_t first = j0 >> S.page_shift, n_pages = (covered + page_keys - 1) >> S.page_shift;
    for (int64_t i = 0; i < n_pages; ++i) {
        const int64_t p = page(first + i);
        k_pages[i] = at(S.k, 0, tile.hk, p);
        v_pages[i] = at(S.v, 0, tile.hk, p);
    }
    a.k = k_pages[0];
    a.v = v_pages[0];
    a.k_pages = k_pages;
    a.v_pages = v_pages;
    a.page_shift = S.page_shift;
    a.paged_keys = covered;
}

// The kernel arguments every chunk of segment S shares for the rows of a tile; the caller sets the chunk's keys,
// visible ranges, bias and outputs.
kernels::ChunkArgs segment_args(const AttnProblem &P, const Segment &S, int64_t n_rows, const TileScratch &w) {
    kernels::ChunkArgs a;
    a.D = P.D;
    a.DV = P.DV;
    a.scale = P.params.scale;
    a.softcap = P.params.softcap;
    a.k_type = S.k.type;
    a.v_type = S.v.type;
    a.k_stride = S.k.nb[1];
    a.v_stride = S.v.nb[1];
    a.n_rows = n_rows;
    a.q = w.q;
    a.scratch = w.kernel;
    return a;
}

// One row's partial state (M, S, O) from a chunk's unnormalized m, s, acc; the empty state when the row saw nothing.
void write_partial(const kernels::KernelTable &kernels, bool any_visible, float m, float s, const float *acc, int64_t DV, float *in) {
    if (!any_visible || s == 0.0f) {
        in[0] = kNegInf;
        in[1] = 0.0f;
        std::fill(in + 2, in + 2 + DV, 0.0f);
    } else {
        in[0] = m;
        in[1] = s;
        kernels.scale_row(acc, 1.0f / s, in + 2, DV);
    }
}

} // namespace

void tile_rows(const AttnProblem &P, const Plan &plan, const Tile &tile, RowInfo *rows, float *q) {
    for (int64_t i = 0; i < tile.n_rows; ++i) {
        RowInfo &ri = rows[i];
        ri.c = plan.row(tile, i);
        ri.q_pos = P.has_q_pos ? load_i32(static_cast<const unsigned char *>(P.q_pos.data) + size_t(ri.c.r) * P.q_pos.nb[0] +
                                          size_t(ri.c.s % P.q_pos.ne[1]) * P.q_pos.nb[1])
                               : P.params.q_pos0 + ri.c.r;
        ri.slope = alibi_slope(P.params.max_bias, P.n_head, ri.c.h);
        row_to_f32(P.q.type, at(P.q, ri.c.r, ri.c.h, ri.c.s), q + i * P.D, P.D);
    }
}

// Piece `piece` of segment `seg` for the rows of a tile: kernels over its chunks, merged in a pairwise tree.
// Writes each row's partial state (M, S, O) to result + i * slot_floats. Tiles of up to kMaxBatchRows rows of F32,
// F16 or BF16 K/V hand the kernel kSpanChunks consecutive chunks per call (kernel.h), each chunk with its own state,
// visibility, bias and page pointers in the batch scratch: the same arithmetic per chunk, K and V read in longer
// runs. Quantized K/V keep one chunk per call: their decode is bound by arithmetic, and longer spans measured 1-2 %
// slower (docs/PERFORMANCE.md, session 16).
void compute_piece(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                   size_t seg, int64_t piece, float *result) {
    const Segment &S = P.segments[seg];
    const SegmentPlan &sp = plan.segments[seg];
    const int64_t n = tile.n_rows, C = kernels::kChunkKeys;
    const int64_t DV = P.DV;
    MergeTree trees[Plan::kTileRows];
    for (int64_t i = 0; i < n; ++i) trees[i] = w.tree(w.chunk_trees, plan, i);

    const kernels::ChunkArgs base = segment_args(P, S, n, w);
    const int64_t c_begin = piece * sp.piece_chunks, c_end = std::min(sp.n_chunks, (piece + 1) * sp.piece_chunks);
    // One chunk: its partial is the piece's result (what a tree of one leaf gives, bit for bit), written in place.
    const bool one_chunk = c_end - c_begin == 1;
    const bool batched = n <= Plan::kMaxBatchRows;
    const int64_t span = batched ? span_keys(S) / C : 1;
    bool same_q = false;
    for (int64_t c0 = c_begin; c0 < c_end; c0 += span) {
        const int nc = int(std::min(span, c_end - c0));
        kernels::ChunkArgs args[kernels::kSpanChunks];
        bool visible[kernels::kSpanChunks];
        int n_args = 0;
        for (int b = 0; b < nc; ++b) {
            const int64_t j0 = (c0 + b) * C, nk = std::min(C, S.n_kv - j0);
            kernels::ChunkArgs &a = args[n_args];
            a = base;
            int32_t *lo = batched ? w.batch_lo + b * n : w.lo, *hi = batched ? w.batch_hi + b * n : w.hi;
            a.lo = lo;
            a.hi = hi;
            a.m = batched ? w.batch_m + b * n : w.m;
            a.s = batched ? w.batch_s + b * n : w.s;
            a.acc = batched ? w.batch_acc + b * n * DV : w.acc;
            bool any_visible = false;
            for (int64_t i = 0; i < n; ++i) {
                visible_range(P, S, rows[i].q_pos, j0, nk, lo[i], hi[i]);
                any_visible = any_visible || lo[i] < hi[i];
            }
            visible[b] = any_visible;
            if (!any_visible) continue; // a chunk no row can see is skipped without being computed
            if (sp.needs_bias) {
                float *bias = w.bias + b * Plan::kMaxBatchRows * C;
                a.bias_stride = fill_tile_bias(P, S, *plan.kernels, rows, n, j0, nk, bias, C);
                a.bias = bias;
            }
            set_chunk_rows(S, tile, j0, nk, w.k_pages + b * plan.chunk_pages, w.v_pages + b * plan.chunk_pages, a);
            a.n_keys = nk;
            a.same_q = same_q;
            ++n_args;
        }
        if (n_args == 1) plan.kernels->attend_chunk(args[0]);
        else if (n_args > 1) plan.kernels->attend_chunks(args, n_args);
        same_q = same_q || n_args > 0;
        for (int b = 0; b < nc; ++b) {
            const float *m = batched ? w.batch_m + b * n : w.m, *s = batched ? w.batch_s + b * n : w.s;
            const float *acc = batched ? w.batch_acc + b * n * DV : w.acc;
            for (int64_t i = 0; i < n; ++i) {
                float *in = one_chunk ? result + size_t(i) * plan.slot_floats : trees[i].incoming();
                write_partial(*plan.kernels, visible[b], m[i], s[i], acc + i * DV, DV, in);
                if (!one_chunk) trees[i].push();
            }
        }
    }
    if (one_chunk) return;
    for (int64_t i = 0; i < n; ++i) {
        float *r = result + size_t(i) * plan.slot_floats;
        for (int64_t d = 0; d < DV; ++d) r[2 + d] = 0.0f;
        trees[i].result(r[0], r[1], r + 2);
    }
}

// Whether segment seg is one chunk (one piece): such short segments of a multi-segment call can share a kernel pass.
bool one_chunk_segment(const Plan &plan, size_t seg) { return plan.segments[seg].n_chunks == 1; }

// How many one-chunk segments of [seg, seg_end) go into one compute_short_segments call: tiles of up to
// kMaxBatchRows rows (more rows are several row groups, which the kernel takes a chunk at a time anyway), at most
// kMaxBatchChunks segments, and at most span_keys keys in all (their bias columns side by side in a row of the
// tile's bias scratch); 1 means the segment goes alone.
int batch_length(const AttnProblem &P, const Plan &plan, const Tile &tile, size_t seg, size_t seg_end) {
    if (tile.n_rows > Plan::kMaxBatchRows) return 1;
    const int max_n = kernels::kMaxBatchChunks;
    const int64_t max_keys = span_keys(P.segments[seg]);
    int n = 0;
    int64_t keys = 0;
    while (seg + size_t(n) < seg_end && n < max_n && one_chunk_segment(plan, seg + size_t(n)) &&
           keys + P.segments[seg + size_t(n)].n_kv <= max_keys) {
        keys += P.segments[seg + size_t(n)].n_kv;
        ++n;
    }
    return std::max(n, 1);
}

// Consecutive one-chunk segments [seg, seg + n) for the rows of a tile (n from batch_length) in one attend_chunks
// call, each segment's result rows written to results[b] as compute_piece writes them: the same arithmetic per
// segment, but their K and V rows read in longer runs.
void compute_short_segments(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                            size_t seg, int n, float *const *results) {
    const int64_t rows_n = tile.n_rows, DV = P.DV;
    kernels::ChunkArgs args[kernels::kMaxBatchChunks];
    bool visible[kernels::kMaxBatchChunks];
    int n_args = 0;
    int64_t bias_offset = 0;
    for (int b = 0; b < n; ++b) {
        const Segment &S = P.segments[seg + size_t(b)];
        kernels::ChunkArgs &a = args[n_args];
        a = segment_args(P, S, rows_n, w);
        a.lo = w.batch_lo + b * rows_n;
        a.hi = w.batch_hi + b * rows_n;
        a.m = w.batch_m + b * rows_n;
        a.s = w.batch_s + b * rows_n;
        a.acc = w.batch_acc + b * rows_n * DV;
        a.n_keys = S.n_kv;
        bool any = false;
        for (int64_t i = 0; i < rows_n; ++i) {
            visible_range(P, S, rows[i].q_pos, 0, S.n_kv, w.batch_lo[b * rows_n + i], w.batch_hi[b * rows_n + i]);
            any = any || w.batch_lo[b * rows_n + i] < w.batch_hi[b * rows_n + i];
        }
        visible[b] = any;
        if (!any) continue; // a segment no row can see is skipped without being computed
        a.bias = nullptr;
        if (plan.segments[seg + size_t(b)].needs_bias) { // each segment's bias columns side by side in w.bias
            a.bias_stride = fill_tile_bias(P, S, *plan.kernels, rows, rows_n, 0, S.n_kv, w.bias + bias_offset,
                                           kernels::kSpanChunks * kernels::kChunkKeys);
            a.bias = w.bias + bias_offset;
            bias_offset += S.n_kv;
        }
        a.k = at(S.k, 0, tile.hk, tile.sk); // never paged: a paged call is one segment, so never batched
        a.v = at(S.v, 0, tile.hk, tile.sk);
        ++n_args;
    }
    if (n_args > 0) plan.kernels->attend_chunks(args, n_args);
    for (int b = 0; b < n; ++b)
        for (int64_t i = 0; i < rows_n; ++i) {
            const int64_t k = b * rows_n + i;
            write_partial(*plan.kernels, visible[b], w.batch_m[k], w.batch_s[k], w.batch_acc + k * DV, DV, results[b] + size_t(i) * plan.slot_floats);
        }
}

} // namespace fst
