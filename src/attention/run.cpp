// The attention entry points: validate → plan → work items (tiles, or tile pieces) on the pool → ⊕ into the
// caller's (state, out) → sinks. After validation and allocation nothing can fail, so a call writes its whole
// result or nothing.
#include "attention/plan.h"
#include "attention/validate.h"
#include "common/error.h"
#include "state/merge.h"
#include "state/merge_tree.h"
#include "tensor/types.h"
#include "threads/pool.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

namespace fst {

namespace {

int32_t load_i32(const unsigned char *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// One worker's scratch for one tile, carved from a float buffer of Plan::tile_floats.
struct TileScratch {
    float *q, *bias, *m, *s, *acc, *chunk_trees, *piece_trees, *piece_result, *seg_result, *kernel;
    int32_t *lo, *hi;
    // A batch of short segments (compute_short_segments): per segment and row m, s, acc, lo, hi, and its result.
    float *batch_m, *batch_s, *batch_acc, *batch_results;
    int32_t *batch_lo, *batch_hi;
    TileScratch(const AttnProblem &P, const Plan &plan, float *base) {
        const int64_t T = Plan::kTileRows;
        const size_t tree = size_t(T) * size_t(plan.tree_levels + 1) * plan.slot_floats;
        q = base;
        bias = q + T * P.D;
        m = bias + T * kernels::kChunkKeys;
        s = m + T;
        acc = s + T;
        chunk_trees = acc + T * P.DV;
        piece_trees = chunk_trees + tree;
        piece_result = piece_trees + tree;
        seg_result = piece_result + size_t(T) * plan.slot_floats;
        lo = reinterpret_cast<int32_t *>(seg_result + size_t(T) * plan.slot_floats);
        hi = lo + T;
        const int64_t B = kernels::kMaxBatchChunks * Plan::kMaxBatchRows;
        batch_m = reinterpret_cast<float *>(hi + T);
        batch_s = batch_m + B;
        batch_acc = batch_s + B;
        batch_results = batch_acc + B * P.DV;
        batch_lo = reinterpret_cast<int32_t *>(batch_results + size_t(B) * plan.slot_floats);
        batch_hi = batch_lo + B;
        kernel = reinterpret_cast<float *>(batch_hi + B);
    }
    MergeTree tree(float *trees, const Plan &plan, int64_t i) const {
        return MergeTree(trees + size_t(i) * size_t(plan.tree_levels + 1) * plan.slot_floats, plan.tree_levels,
                         int64_t(plan.slot_floats) - 2);
    }
};

// What the visibility and bias of one query row need for one segment.
struct RowInfo {
    RowCoord c;
    int64_t q_pos = 0;
    float slope = 1.0f;
};

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

// bias[j] for keys [j0, j0 + n) of one row: -inf where a kv_pos-defined virtual mask hides the key, plus slope * mask.
void fill_bias(const AttnProblem &P, const Segment &S, const kernels::KernelTable &kernels, const RowInfo &ri,
               int64_t j0, int64_t n, float *bias) {
    const fst_attn_params &p = P.params;
    const unsigned char *mask_row = S.has_mask ? at(S.mask, ri.c.r, ri.c.h % S.mask.ne[2], ri.c.s % S.mask.ne[3]) : nullptr;
    const unsigned char *kv_pos_col =
        S.has_kv_pos ? static_cast<const unsigned char *>(S.kv_pos.data) + size_t(ri.c.s % S.kv_pos.ne[1]) * S.kv_pos.nb[1]
                     : nullptr;
    if (mask_row && !kv_pos_col && S.mask.type == FST_TYPE_F16 && S.mask.nb[0] == 2) {
        // The common case (ggml's F16 mask, contiguous rows): a vector conversion, then the ALiBi slope.
        kernels.f16_row_to_f32(mask_row + size_t(j0) * 2, bias, n);
        if (ri.slope != 1.0f)
            for (int64_t j = 0; j < n; ++j) bias[j] = bias[j] == kNegInf ? kNegInf : ri.slope * bias[j];
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

// y = a * x. The restrict-qualified pointers let the compiler vectorize it (a scalar loop here was a fifth of a
// short call's time).
void scale_row(const float *__restrict x, float a, float *__restrict y, int64_t n) {
    for (int64_t d = 0; d < n; ++d) y[d] = x[d] * a;
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
    a.bias_stride = kernels::kChunkKeys;
    a.scratch = w.kernel;
    return a;
}

// One row's partial state (M, S, O) from a chunk's unnormalized m, s, acc; the empty state when the row saw nothing.
void write_partial(bool any_visible, float m, float s, const float *acc, int64_t DV, float *in) {
    if (!any_visible || s == 0.0f) {
        in[0] = kNegInf;
        in[1] = 0.0f;
        std::fill(in + 2, in + 2 + DV, 0.0f);
    } else {
        in[0] = m;
        in[1] = s;
        scale_row(acc, 1.0f / s, in + 2, DV);
    }
}

// Piece `piece` of segment `seg` for the rows of a tile: kernels over its chunks, merged in a pairwise tree.
// Writes each row's partial state (M, S, O) to result + i * slot_floats.
void compute_piece(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                   size_t seg, int64_t piece, float *result) {
    const Segment &S = P.segments[seg];
    const SegmentPlan &sp = plan.segments[seg];
    const int64_t n = tile.n_rows, C = kernels::kChunkKeys;
    const int64_t DV = P.DV;
    MergeTree trees[Plan::kTileRows];
    for (int64_t i = 0; i < n; ++i) trees[i] = w.tree(w.chunk_trees, plan, i);

    kernels::ChunkArgs a = segment_args(P, S, n, w);
    a.lo = w.lo;
    a.hi = w.hi;
    a.m = w.m;
    a.s = w.s;
    a.acc = w.acc;
    const int64_t c_begin = piece * sp.piece_chunks, c_end = std::min(sp.n_chunks, (piece + 1) * sp.piece_chunks);
    // One chunk: its partial is the piece's result (what a tree of one leaf gives, bit for bit), written in place.
    const bool one_chunk = c_end - c_begin == 1;
    for (int64_t c = c_begin; c < c_end; ++c) {
        const int64_t j0 = c * C, nk = std::min(C, S.n_kv - j0);
        bool any_visible = false;
        for (int64_t i = 0; i < n; ++i) {
            visible_range(P, S, rows[i].q_pos, j0, nk, w.lo[i], w.hi[i]);
            any_visible = any_visible || w.lo[i] < w.hi[i];
        }
        if (any_visible) { // a chunk no row can see is skipped without being computed
            a.bias = nullptr;
            if (sp.needs_bias) {
                for (int64_t i = 0; i < n; ++i) fill_bias(P, S, *plan.kernels, rows[i], j0, nk, w.bias + i * C);
                a.bias = w.bias;
            }
            a.k = at(S.k, j0, tile.hk, tile.sk);
            a.v = at(S.v, j0, tile.hk, tile.sk);
            a.n_keys = nk;
            plan.kernels->attend_chunk(a);
            a.same_q = true;
        }
        for (int64_t i = 0; i < n; ++i) {
            float *in = one_chunk ? result + size_t(i) * plan.slot_floats : trees[i].incoming();
            write_partial(any_visible, w.m[i], w.s[i], w.acc + i * DV, DV, in);
            if (!one_chunk) trees[i].push();
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

// Consecutive one-chunk segments [seg, seg + n) for the rows of a tile (n from batch_length) in one attend_chunks
// call, each segment's result rows written to results[b] as compute_piece writes them: the same arithmetic per
// segment, but their K and V rows read in longer runs.
void compute_short_segments(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                            size_t seg, int n, float *const *results) {
    const int64_t rows_n = tile.n_rows, C = kernels::kChunkKeys, DV = P.DV;
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
            for (int64_t i = 0; i < rows_n; ++i) fill_bias(P, S, *plan.kernels, rows[i], 0, S.n_kv, w.bias + i * C + bias_offset);
            a.bias = w.bias + bias_offset;
            bias_offset += S.n_kv;
        }
        a.k = at(S.k, 0, tile.hk, tile.sk);
        a.v = at(S.v, 0, tile.hk, tile.sk);
        ++n_args;
    }
    if (n_args > 0) plan.kernels->attend_chunks(args, n_args);
    for (int b = 0; b < n; ++b)
        for (int64_t i = 0; i < rows_n; ++i) {
            const int64_t k = b * rows_n + i;
            write_partial(visible[b], w.batch_m[k], w.batch_s[k], w.batch_acc + k * DV, DV, results[b] + size_t(i) * plan.slot_floats);
        }
}

// How many one-chunk segments of [seg, seg_end) go into one compute_short_segments call: tiles of up to
// kMaxBatchRows rows (more rows are several row groups, which the kernel takes a chunk at a time anyway), at most
// kMaxBatchChunks segments, and keys that fit one chunk's bias columns; 1 means the segment goes alone.
int batch_length(const AttnProblem &P, const Plan &plan, const Tile &tile, size_t seg, size_t seg_end) {
    if (tile.n_rows > Plan::kMaxBatchRows) return 1;
    const int max_n = kernels::kMaxBatchChunks;
    int n = 0;
    int64_t keys = 0;
    while (seg + size_t(n) < seg_end && n < max_n && one_chunk_segment(plan, seg + size_t(n)) &&
           keys + P.segments[seg + size_t(n)].n_kv <= kernels::kChunkKeys) {
        keys += P.segments[seg + size_t(n)].n_kv;
        ++n;
    }
    return std::max(n, 1);
}

// ⊕ one segment's result rows into the caller's state/out.
void merge_into_state(const AttnProblem &P, const Plan &plan, const RowInfo *rows, int64_t n, const float *results) {
    for (int64_t i = 0; i < n; ++i) {
        const RowCoord &rc = rows[i].c;
        const float *r = results + size_t(i) * plan.slot_floats;
        float *ms = state_row(P.state, rc.h, rc.r, rc.s);
        merge_state(ms[0], ms[1], out_row(P.out, rc.h, rc.r, rc.s), r[0], r[1], r + 2, P.DV);
    }
}

void merge_sinks(const AttnProblem &P, const RowInfo *rows, int64_t n) {
    if (!P.has_sinks) return;
    for (int64_t i = 0; i < n; ++i) {
        const RowCoord &rc = rows[i].c;
        float sink;
        std::memcpy(&sink, static_cast<const unsigned char *>(P.sinks.data) + size_t(rc.h) * P.sinks.nb[0], 4);
        float *ms = state_row(P.state, rc.h, rc.r, rc.s);
        merge_state(ms[0], ms[1], out_row(P.out, rc.h, rc.r, rc.s), sink, 1.0f, nullptr, P.DV);
    }
}

// Segment results of a tile from its pieces, in order, then into the state; then the sinks. `piece_result(g)` gives
// the stored partial rows of global piece g, or computes them into scratch.
template <class PieceResult>
void finish_tile(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                 PieceResult &&piece_result) {
    const int64_t n = tile.n_rows;
    for (size_t seg = 0; seg < P.segments.size(); ++seg) {
        const SegmentPlan &sp = plan.segments[seg];
        if (sp.n_pieces == 1) { // the piece is the segment's result (as a tree of one leaf would give it)
            merge_into_state(P, plan, rows, n, piece_result(seg, 0));
            continue;
        }
        MergeTree trees[Plan::kTileRows];
        for (int64_t i = 0; i < n; ++i) trees[i] = w.tree(w.piece_trees, plan, i);
        for (int64_t piece = 0; piece < sp.n_pieces; ++piece) {
            const float *r = piece_result(seg, piece);
            for (int64_t i = 0; i < n; ++i) {
                const float *src = r + size_t(i) * plan.slot_floats;
                std::copy(src, src + plan.slot_floats, trees[i].incoming());
                trees[i].push();
            }
        }
        for (int64_t i = 0; i < n; ++i) {
            float *r = w.seg_result + size_t(i) * plan.slot_floats;
            for (int64_t d = 0; d < P.DV; ++d) r[2 + d] = 0.0f;
            trees[i].result(r[0], r[1], r + 2);
        }
        merge_into_state(P, plan, rows, n, w.seg_result);
    }
    merge_sinks(P, rows, n);
}

// A whole tile on one thread: every piece of every segment in order.
void run_tile(const AttnProblem &P, const Plan &plan, const Tile &tile, float *scratch) {
    TileScratch w(P, plan, scratch);
    RowInfo rows[Plan::kTileRows];
    tile_rows(P, plan, tile, rows, w.q);
    size_t batch_first = 0; // short segments [batch_first, batch_first + batch_n) computed together, in w.batch_results
    int batch_n = 0;
    const size_t batch_stride = size_t(tile.n_rows) * plan.slot_floats;
    finish_tile(P, plan, tile, rows, w, [&](size_t seg, int64_t piece) {
        if (one_chunk_segment(plan, seg)) {
            if (batch_n == 0 || seg < batch_first || seg >= batch_first + size_t(batch_n)) {
                const int n = batch_length(P, plan, tile, seg, plan.segments.size());
                batch_n = 0;
                if (n > 1) {
                    float *results[kernels::kMaxBatchChunks];
                    for (int b = 0; b < n; ++b) results[b] = w.batch_results + size_t(b) * batch_stride;
                    compute_short_segments(P, plan, tile, rows, w, seg, n, results);
                    batch_first = seg;
                    batch_n = n;
                }
            }
            if (batch_n > 0) return static_cast<const float *>(w.batch_results + (seg - batch_first) * batch_stride);
        }
        compute_piece(P, plan, tile, rows, w, seg, piece, w.piece_result);
        return static_cast<const float *>(w.piece_result);
    });
}

// Per-thread scratch kept between calls, so that a call in steady state allocates nothing. Grown (which may throw)
// only before any output is written.
std::vector<std::vector<float>> &worker_buffers() {
    thread_local std::vector<std::vector<float>> buffers;
    return buffers;
}
std::vector<float> &piece_buffer() {
    thread_local std::vector<float> buffer;
    return buffer;
}

// Pieces completed per tile in a split call (counted atomically by the work items).
std::vector<int64_t> &pieces_done() {
    thread_local std::vector<int64_t> done;
    return done;
}

Plan &plan_storage() {
    thread_local Plan plan; // reused: a call in steady state allocates nothing
    return plan;
}

void run(const AttnProblem &P, int ith, int nth) {
    // A local reference, so that the tasks below (which run on pool threads) capture this thread's plan.
    Plan &plan = plan_storage();
    make_plan(P, plan);
    const bool whole_call = nth == 0;
    int workers = 1;
    if (whole_call) {
        workers = P.params.n_threads == 0 ? hardware_threads() : P.params.n_threads;
        const int64_t items = int64_t(plan.tiles.size()) * (plan.split ? int64_t(plan.runs.size()) : 1);
        workers = int(std::clamp<int64_t>(items, 1, workers));
    }
    auto &buffers = worker_buffers();
    if (buffers.size() < size_t(workers)) buffers.resize(size_t(workers));
    for (int i = 0; i < workers; ++i)
        if (buffers[size_t(i)].size() < plan.tile_floats) buffers[size_t(i)].resize(plan.tile_floats);

    if (!whole_call) { // part ith of nth: whole tiles on this thread
        for (size_t t = size_t(ith); t < plan.tiles.size(); t += size_t(nth)) run_tile(P, plan, plan.tiles[t], buffers[0].data());
        return;
    }
    if (!plan.split) {
        auto task = [&](size_t t, int worker) { run_tile(P, plan, plan.tiles[t], buffers[size_t(worker)].data()); };
        parallel_for(plan.tiles.size(), workers, task);
        return;
    }
    // Split: every (tile, piece) is a work item whose partial rows are stored; the item that completes a tile's last
    // piece then merges the tile's pieces, in order. The merge is the same whichever thread runs it and whenever, so
    // results do not change; doing it there instead of in a second pass spares the call a second wait for the
    // slowest thread.
    const size_t per_item = size_t(plan.max_tile_rows) * plan.slot_floats;
    auto &stored = piece_buffer();
    const size_t need = plan.tiles.size() * size_t(plan.total_pieces) * per_item;
    if (stored.size() < need) stored.resize(need);
    auto &done = pieces_done();
    if (done.size() < plan.tiles.size()) done.resize(plan.tiles.size());
    std::fill(done.begin(), done.begin() + std::ptrdiff_t(plan.tiles.size()), int64_t(0));
    auto item_result = [&](size_t t, int64_t g) { return stored.data() + (t * size_t(plan.total_pieces) + size_t(g)) * per_item; };
    auto piece_task = [&](size_t item, int worker) {
        const size_t t = item / plan.runs.size();
        const PieceRun &run = plan.runs[item % plan.runs.size()];
        TileScratch w(P, plan, buffers[size_t(worker)].data());
        RowInfo rows[Plan::kTileRows];
        tile_rows(P, plan, plan.tiles[t], rows, w.q);
        size_t seg = run.seg;
        const int64_t g_end = run.first_piece + run.n_pieces;
        for (int64_t g = run.first_piece; g < g_end;) {
            while (seg + 1 < plan.segments.size() && plan.segments[seg + 1].first_piece <= g) ++seg;
            if (one_chunk_segment(plan, seg)) { // a piece is then the whole segment: g and seg advance together
                const size_t seg_end = std::min(seg + size_t(g_end - g), plan.segments.size());
                const int n = batch_length(P, plan, plan.tiles[t], seg, seg_end);
                if (n > 1) {
                    float *results[kernels::kMaxBatchChunks];
                    for (int b = 0; b < n; ++b) results[b] = item_result(t, g + b);
                    compute_short_segments(P, plan, plan.tiles[t], rows, w, seg, n, results);
                    g += n;
                    continue;
                }
            }
            compute_piece(P, plan, plan.tiles[t], rows, w, seg, g - plan.segments[seg].first_piece, item_result(t, g));
            ++g;
        }
        // acq_rel: the last run's thread sees every other run's stored rows.
        if (std::atomic_ref<int64_t>(done[t]).fetch_add(1, std::memory_order_acq_rel) + 1 < int64_t(plan.runs.size())) return;
        finish_tile(P, plan, plan.tiles[t], rows, w, [&](size_t s, int64_t piece) {
            return static_cast<const float *>(item_result(t, plan.segments[s].first_piece + piece));
        });
    };
    parallel_for(plan.tiles.size() * plan.runs.size(), workers, piece_task);
}

// The validated problem of this thread's current call (reused: no allocation in steady state).
AttnProblem &problem() {
    thread_local AttnProblem P;
    return P;
}

void check_part(int ith, int nth) {
    if (nth < 1) fail("argument", "nth", int64_t(nth), ">= 1");
    if (ith < 0 || ith >= nth) fail("argument", "ith", int64_t(ith), "in [0, nth) = [0, " + std::to_string(nth) + ")");
}

fst_segment single_segment(const fst_attn_params *p, const fst_tensor *k, const fst_tensor *v, const fst_tensor *mask) {
    fst_segment g{};
    g.k = k;
    g.v = v;
    g.mask = mask;
    if (p != nullptr) {
        g.kv_pos0 = p->kv_pos0;
        g.kv_pos = p->kv_pos;
    }
    return g;
}

} // namespace

} // namespace fst

using namespace fst;

extern "C" {

fst_attn_params fst_attn_default_params(void) {
    fst_attn_params p;
    std::memset(&p, 0, sizeof p);
    p.scale = 1.0f;
    p.max_bias = 0.0f;
    p.softcap = 0.0f;
    p.virtual_mask = FST_MASK_NONE;
    p.window = 0;
    p.q_pos0 = 0;
    p.kv_pos0 = 0;
    p.q_pos = nullptr;
    p.kv_pos = nullptr;
    p.n_threads = 0;
    p.isa = FST_ISA_AUTO;
    p.precision = FST_PRECISION_EXACT;
    return p;
}

fst_status fst_attn_with_state(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k, const fst_tensor *v,
                               const fst_tensor *mask, const fst_tensor *sinks, fst_tensor *state, fst_tensor *out) {
    return guard("fst_attn_with_state", [&] {
        const fst_segment g = single_segment(p, k, v, mask);
        validate_attention(problem(), p, q, &g, 1, sinks, state, out);
        run(problem(), 0, 0);
    });
}

fst_status fst_attn_segments(const fst_attn_params *p, const fst_tensor *q, const fst_segment *segments,
                             int64_t n_segments, const fst_tensor *sinks, fst_tensor *state, fst_tensor *out) {
    return guard("fst_attn_segments", [&] {
        validate_attention(problem(), p, q, segments, n_segments, sinks, state, out);
        run(problem(), 0, 0);
    });
}

fst_status fst_attn_with_state_part(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k,
                                    const fst_tensor *v, const fst_tensor *mask, const fst_tensor *sinks,
                                    fst_tensor *state, fst_tensor *out, int ith, int nth) {
    return guard("fst_attn_with_state_part", [&] {
        const fst_segment g = single_segment(p, k, v, mask);
        validate_attention(problem(), p, q, &g, 1, sinks, state, out);
        check_part(ith, nth);
        run(problem(), ith, nth);
    });
}

fst_status fst_attn_segments_part(const fst_attn_params *p, const fst_tensor *q, const fst_segment *segments,
                                  int64_t n_segments, const fst_tensor *sinks, fst_tensor *state, fst_tensor *out,
                                  int ith, int nth) {
    return guard("fst_attn_segments_part", [&] {
        validate_attention(problem(), p, q, segments, n_segments, sinks, state, out);
        check_part(ith, nth);
        run(problem(), ith, nth);
    });
}

} // extern "C"
