// Computing a tile's partial states: its rows' setup (q in F32, positions, ALiBi slopes), each chunk's visible
// ranges and bias, the kernel calls, and the partial state (M, S, O) of each piece of a segment. run.cpp schedules
// these and merges what they produce.
#pragma once

#include "attention/plan.h"
#include "state/merge_tree.h"

#include <cstddef>
#include <cstdint>

namespace fst {


// One worker's scratch for one tile, carved from a float buffer of Plan::tile_floats.
struct TileScratch {
    float *q, *bias, *m, *s, *acc, *chunk_trees, *piece_trees, *piece_result, *seg_result, *kernel;
    int32_t *lo, *hi;
    const unsigned char **k_pages, **v_pages; // kSpanChunks x plan.chunk_pages each (paged K/V, per chunk of a span)
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
        k_pages = reinterpret_cast<const unsigned char **>(batch_hi + B); // 8-byte aligned: every size above is a
        v_pages = k_pages + kernels::kSpanChunks * plan.chunk_pages;      // multiple of 32 floats
        kernel = reinterpret_cast<float *>(v_pages + kernels::kSpanChunks * plan.chunk_pages);
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

// The rows of a tile: where each is (head, query row, sequence), its position and slope, and q in F32.
void tile_rows(const AttnProblem &P, const Plan &plan, const Tile &tile, RowInfo *rows, float *q);

// Piece `piece` of segment `seg` for the rows of a tile: kernels over its chunks, merged in a pairwise tree.
// Writes each row's partial state (M, S, O) to result + i * slot_floats.
void compute_piece(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                   size_t seg, int64_t piece, float *result);

// Whether segment seg is one chunk (one piece): such short segments of a multi-segment call can share a kernel pass.
bool one_chunk_segment(const Plan &plan, size_t seg);

// How many one-chunk segments of [seg, seg_end) go into one compute_short_segments call (1: the segment goes alone).
int batch_length(const AttnProblem &P, const Plan &plan, const Tile &tile, size_t seg, size_t seg_end);

// Consecutive one-chunk segments [seg, seg + n) for the rows of a tile (n from batch_length) in one kernel pass,
// each segment's result rows written to results[b] as compute_piece writes them.
void compute_short_segments(const AttnProblem &P, const Plan &plan, const Tile &tile, const RowInfo *rows, TileScratch &w,
                            size_t seg, int n, float *const *results);

} // namespace fst
