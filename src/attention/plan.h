// Planning a call. Work is cut along three axes, all fixed by the problem and never by the thread count, so results
// are bitwise identical for any n_threads and for any ith/nth partition:
//  - tiles: up to kTileRows query rows that read the same KV head of the same KV sequence;
//  - chunks: kChunkKeys keys, the unit of one kernel call and the leaves of a pairwise merge tree;
//  - pieces: runs of piece_chunks chunks (a power of two) that may run on different threads when there are too few
//    tiles to keep threads busy (flash-decoding); their partial states are merged, in order, with ⊕. A segment too
//    short to cut is one piece, and consecutive ones are grouped into a work item (PieceRun).
#pragma once

#include "attention/validate.h"
#include "kernels/kernel.h"

#include <vector>

namespace fst {

struct Tile {
    int64_t sk = 0, hk = 0;
    int64_t first = 0, n_rows = 0; // a range of the group's row order (see Plan::row)
};

struct RowCoord {
    int64_t s = 0, h = 0, r = 0; // sequence, query head, query row
};

// Consecutive pieces (global indices, from segment seg on) that one work item of a split call computes in order.
struct PieceRun {
    int64_t first_piece = 0, n_pieces = 0;
    size_t seg = 0;
};

struct SegmentPlan {
    int64_t n_chunks = 0, piece_chunks = 1, n_pieces = 0;
    int64_t first_piece = 0; // index of this segment's first piece among all segments' pieces
    bool needs_bias = false; // a mask tensor or a kv_pos tensor: per-key bias values
};

// Paged K/V (fst_attn_paged): a chunk's page pointers cover its keys and kPagedAheadKeys after them (the rows the
// kernels prefetch ahead).
constexpr int64_t kPagedAheadKeys = 64;

struct Plan {
    static constexpr int64_t kTileRows = 32;
    static constexpr int64_t kTargetItems = 32;    // enough independent work items for the threads of one machine
    static constexpr int64_t kMinPieceChunks = 1;  // a piece covers at least one chunk (1024 keys)
    static constexpr size_t kMaxGroupedFloats = size_t(4) << 20; // stored partials of grouped short segments: 16 MiB
    static constexpr int64_t kMaxBatchRows = 4; // tiles of up to 4 rows run short segments several at a time (tile.cpp)
    // A span of chunks (kernels::kSpanChunks) keeps each chunk's bias rows of such a tile in the tile's bias scratch.
    static_assert(kernels::kSpanChunks * kMaxBatchRows <= kTileRows);

    int64_t heads_per_kv = 1, seqs_per_kv = 1, rows_per_group = 0, n_q = 0, n_seq_kv = 1;
    std::vector<Tile> tiles;
    std::vector<SegmentPlan> segments;
    int64_t max_tile_rows = 0;
    int64_t total_pieces = 0;  // over all segments
    std::vector<PieceRun> runs; // the work items of each tile when split
    bool split = false;        // runs are separate work items with stored partials (else a tile is one work item)
    int tree_levels = 0;       // slots of a merge tree over chunks or over pieces
    size_t tile_floats = 0;    // per-worker scratch to run one tile's pieces (see tile.h's TileScratch)
    size_t slot_floats = 0;    // one partial state: M, S, O[DV]
    int64_t chunk_pages = 0;   // page pointers a paged chunk needs (tile.cpp's set_chunk_rows), a multiple of 8
    const kernels::KernelTable *kernels = nullptr;

    // Row i of a tile, ordered (sequence, query row, head) so that a tile holds few distinct query positions.
    RowCoord row(const Tile &t, int64_t i) const {
        const int64_t g = t.first + i;
        const int64_t hl = g % heads_per_kv, r_and_s = g / heads_per_kv;
        RowCoord c;
        c.h = t.hk * heads_per_kv + hl;
        c.r = r_and_s % n_q;
        c.s = t.sk + (r_and_s / n_q) * n_seq_kv;
        return c;
    }
};

// Fills plan (reusing its storage: no allocation in steady state).
void make_plan(const AttnProblem &P, Plan &plan);

// ALiBi slope of query head h (SPEC section 1); 1 when max_bias == 0.
float alibi_slope(float max_bias, int64_t n_head, int64_t h);

} // namespace fst
