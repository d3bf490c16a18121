#include "attention/plan.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace fst {

float alibi_slope(float max_bias, int64_t n_head, int64_t h) {
    if (max_bias <= 0.0f) return 1.0f;
    const int64_t n2 = int64_t(1) << (std::bit_width(uint64_t(n_head)) - 1); // 2^floor(log2(n_head))
    const double m0 = std::exp2(-double(max_bias) / double(n2));
    const double m1 = std::exp2(-double(max_bias) / 2.0 / double(n2));
    return float(h < n2 ? std::pow(m0, double(h + 1)) : std::pow(m1, double(2 * (h - n2) + 1)));
}

void make_plan(const AttnProblem &P, Plan &plan) {
    plan.tiles.clear();
    plan.segments.clear();
    plan.total_pieces = 0;
    plan.runs.clear();
    plan.split = false;
    plan.heads_per_kv = P.n_head / P.n_head_kv;
    plan.seqs_per_kv = P.n_seq / P.n_seq_kv;
    plan.n_q = P.n_q;
    plan.n_seq_kv = P.n_seq_kv;
    plan.rows_per_group = plan.heads_per_kv * P.n_q * plan.seqs_per_kv;
    plan.max_tile_rows = std::min(Plan::kTileRows, plan.rows_per_group);
    for (int64_t sk = 0; sk < P.n_seq_kv; ++sk)
        for (int64_t hk = 0; hk < P.n_head_kv; ++hk)
            for (int64_t first = 0; first < plan.rows_per_group; first += Plan::kTileRows)
                plan.tiles.push_back(Tile{sk, hk, first, std::min(Plan::kTileRows, plan.rows_per_group - first)});

    // Pieces only when the tiles alone are too few to share out; then each segment is cut so that
    // tiles x pieces reaches kTargetItems, in power-of-two runs of chunks.
    const int64_t n_tiles = int64_t(plan.tiles.size());
    const int64_t want_pieces = n_tiles >= Plan::kTargetItems ? 1 : (Plan::kTargetItems + n_tiles - 1) / n_tiles;
    int64_t max_leaves = 1, total_chunks = 0;
    bool long_segment = false; // one cut into pieces
    for (const Segment &S : P.segments) {
        SegmentPlan sp;
        sp.n_chunks = (S.n_kv + kernels::kChunkKeys - 1) / kernels::kChunkKeys;
        int64_t chunks = std::max<int64_t>(Plan::kMinPieceChunks, (sp.n_chunks + want_pieces - 1) / want_pieces);
        sp.piece_chunks = int64_t(std::bit_ceil(uint64_t(chunks)));
        sp.n_pieces = std::max<int64_t>(1, (sp.n_chunks + sp.piece_chunks - 1) / sp.piece_chunks);
        sp.first_piece = plan.total_pieces;
        sp.needs_bias = S.has_mask || S.has_kv_pos;
        plan.total_pieces += sp.n_pieces;
        long_segment = long_segment || sp.n_pieces > 1;
        total_chunks += sp.n_chunks;
        max_leaves = std::max({max_leaves, sp.piece_chunks, sp.n_pieces});
        plan.segments.push_back(sp);
    }
    // Work items of a split call: each piece of a segment cut into pieces is a run of its own; consecutive uncut
    // segments (the short segments of a multi-segment call, e.g. a paged cache) are grouped into runs of about
    // total chunks / want_pieces chunks, so that they too spread over the threads (one item per tile left the
    // threads waiting for each other at the end: docs/PERFORMANCE.md). Grouping stores every segment's partial
    // state until the tile merges them in order, so it stays within kMaxGroupedFloats.
    const int64_t group_chunks = std::max(Plan::kMinPieceChunks, (total_chunks + want_pieces - 1) / want_pieces);
    int64_t open_chunks = 0;
    bool open = false;
    for (size_t seg = 0; seg < plan.segments.size(); ++seg) {
        const SegmentPlan &sp = plan.segments[seg];
        if (sp.n_pieces > 1) {
            for (int64_t p = 0; p < sp.n_pieces; ++p) plan.runs.push_back(PieceRun{sp.first_piece + p, 1, seg});
            open = false;
        } else if (open && open_chunks < group_chunks) {
            plan.runs.back().n_pieces += 1;
            open_chunks += sp.n_chunks;
        } else {
            plan.runs.push_back(PieceRun{sp.first_piece, 1, seg});
            open_chunks = sp.n_chunks;
            open = true;
        }
    }
    const size_t stored_floats = plan.tiles.size() * size_t(plan.total_pieces) * size_t(plan.max_tile_rows) * size_t(P.DV + 2);
    plan.split = plan.runs.size() > 1 && (long_segment || stored_floats <= Plan::kMaxGroupedFloats);
    plan.tree_levels = int(std::bit_width(uint64_t(max_leaves))) + 1;
    plan.chunk_pages = 0;
    for (const Segment &S : P.segments)
        if (S.paged && (int64_t(1) << S.page_shift) < kernels::kChunkKeys) {
            const int64_t pages = ((kernels::kChunkKeys + kPagedAheadKeys) >> S.page_shift) + 1;
            plan.chunk_pages = std::max(plan.chunk_pages, (pages + 7) / 8 * 8); // 64-byte multiples keep `kernel` aligned
        }

    // The best level that handles these head sizes (e.g. D = 40: AVX2 when AVX-512 needs multiples of 16).
    plan.kernels = &kernels::select_kernels(P.params.isa);
    while (!plan.kernels->supports(P.D, P.DV)) plan.kernels = &kernels::select_kernels(fst_isa(plan.kernels->isa - 1));

    const size_t T = size_t(Plan::kTileRows);
    plan.slot_floats = size_t(P.DV + 2);
    plan.tile_floats = T * size_t(P.D)                                          // q rows in F32
                       + T * size_t(kernels::kChunkKeys)                        // bias
                       + 2 * T + T * size_t(P.DV)                               // chunk m, s, acc
                       + 2 * T * size_t(plan.tree_levels + 1) * plan.slot_floats // merge trees: chunks, pieces
                       + 2 * T * plan.slot_floats                                // a piece's and a segment's result
                       + plan.kernels->scratch_floats(P.D, P.DV, int64_t(T))
                       + 4 * T // lo / hi (int32, stored in float slots)
                       + 2 * 2 * size_t(kernels::kSpanChunks * plan.chunk_pages) // K and V page pointers of a span's
                                                                                  // paged chunks (2 float slots each)
                       + size_t(kernels::kMaxBatchChunks * Plan::kMaxBatchRows) * (2 * size_t(P.DV) + 6); // short-segment batches
}

} // namespace fst
