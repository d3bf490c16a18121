// Planning a call: which query rows go together (tiles), how the KV range is cut (chunks of kChunkKeys keys, the
// leaves of a fixed pairwise merge tree), and how much scratch each worker needs. Everything here depends on the
// problem only — never on the thread count — so results are bitwise identical for any n_threads.
#pragma once

#include "attention/validate.h"
#include "kernels/kernel.h"

#include <vector>

namespace fst {

// A tile: up to kTileRows query rows that read the same KV head hk of the same KV sequence sk.
struct Tile {
    int64_t sk = 0, hk = 0;
    int64_t first = 0, n_rows = 0; // a range of the group's row order (see Plan::row)
};

struct RowCoord {
    int64_t s = 0, h = 0, r = 0; // sequence, query head, query row
};

struct Plan {
    static constexpr int64_t kTileRows = 32;
    int64_t heads_per_kv = 1; // n_head / n_head_kv
    int64_t seqs_per_kv = 1;  // n_seq / n_seq_kv
    int64_t rows_per_group = 0;
    std::vector<Tile> tiles;
    int64_t n_chunks = 0;
    int tree_levels = 0;      // slots of the per-row merge tree
    bool needs_bias = false;  // a mask tensor or a virtual mask is present
    size_t scratch_floats = 0; // per worker
    int n_workers = 1;
    const kernels::KernelTable *kernels = nullptr;

    // Row i of a group, ordered (sequence, query row, head) so that a tile holds few distinct query positions.
    RowCoord row(const Tile &t, int64_t i) const {
        const int64_t g = t.first + i;
        const int64_t hl = g % heads_per_kv, r_and_s = g / heads_per_kv;
        RowCoord c;
        c.h = t.hk * heads_per_kv + hl;
        c.r = r_and_s % n_q_;
        c.s = t.sk + (r_and_s / n_q_) * n_seq_kv_;
        return c;
    }

    int64_t n_q_ = 0, n_seq_kv_ = 0;
};

Plan make_plan(const AttnProblem &P);

// ALiBi slope of query head h (SPEC section 1); 1 when max_bias == 0.
float alibi_slope(float max_bias, int64_t n_head, int64_t h);

} // namespace fst
