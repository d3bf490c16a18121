// The attention entry points: validate → plan → work items (tiles, or tile pieces) on the pool → ⊕ into the
// caller's (state, out) → sinks. After validation and allocation nothing can fail, so a call writes its whole
// result or nothing.
#include "attention/plan.h"
#include "attention/tile.h"
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

// ⊕ one segment's result rows into the caller's state/out.
void merge_into_state(const AttnProblem &P, const Plan &plan, const RowInfo *rows, int64_t n, const float *results) {
    for (int64_t i = 0; i < n; ++i) {
        const RowCoord &rc = rows[i].c;
        const float *r = results + size_t(i) * plan.slot_floats;
        float *ms = state_row(P.state, rc.h, rc.r, rc.s);
        merge_state(ms[0], ms[1], out_row(P.out, rc.h, rc.r, rc.s), r[0], r[1], r + 2, P.DV, plan.kernels->combine_rows);
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

fst_status fst_attn_paged(const fst_attn_params *p, const fst_tensor *q, const fst_paged_kv *kv, const fst_tensor *mask,
                          const fst_tensor *sinks, fst_tensor *state, fst_tensor *out) {
    return guard("fst_attn_paged", [&] {
        validate_paged_attention(problem(), p, q, kv, mask, sinks, state, out);
        run(problem(), 0, 0);
    });
}

fst_status fst_attn_paged_part(const fst_attn_params *p, const fst_tensor *q, const fst_paged_kv *kv, const fst_tensor *mask,
                               const fst_tensor *sinks, fst_tensor *state, fst_tensor *out, int ith, int nth) {
    return guard("fst_attn_paged_part", [&] {
        validate_paged_attention(problem(), p, q, kv, mask, sinks, state, out);
        check_part(ith, nth);
        run(problem(), ith, nth);
    });
}

} // extern "C"
