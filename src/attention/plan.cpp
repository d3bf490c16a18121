#include "attention/plan.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <thread>

namespace fst {

float alibi_slope(float max_bias, int64_t n_head, int64_t h) {
    if (max_bias <= 0.0f) return 1.0f;
    const int64_t n2 = int64_t(1) << (std::bit_width(uint64_t(n_head)) - 1); // 2^floor(log2(n_head))
    const double m0 = std::exp2(-double(max_bias) / double(n2));
    const double m1 = std::exp2(-double(max_bias) / 2.0 / double(n2));
    return float(h < n2 ? std::pow(m0, double(h + 1)) : std::pow(m1, double(2 * (h - n2) + 1)));
}

Plan make_plan(const AttnProblem &P) {
    Plan plan;
    plan.heads_per_kv = P.n_head / P.n_head_kv;
    plan.seqs_per_kv = P.n_seq / P.n_seq_kv;
    plan.n_q_ = P.n_q;
    plan.n_seq_kv_ = P.n_seq_kv;
    plan.rows_per_group = plan.heads_per_kv * P.n_q * plan.seqs_per_kv;
    for (int64_t sk = 0; sk < P.n_seq_kv; ++sk)
        for (int64_t hk = 0; hk < P.n_head_kv; ++hk)
            for (int64_t first = 0; first < plan.rows_per_group; first += Plan::kTileRows)
                plan.tiles.push_back(Tile{sk, hk, first, std::min(Plan::kTileRows, plan.rows_per_group - first)});

    plan.n_chunks = (P.n_kv + kernels::kChunkKeys - 1) / kernels::kChunkKeys;
    plan.tree_levels = int(std::bit_width(uint64_t(plan.n_chunks))) + 1;
    plan.needs_bias = P.has_mask || P.params.virtual_mask != FST_MASK_NONE;
    plan.kernels = &kernels::select_kernels(P.params.isa);

    const int64_t T = Plan::kTileRows;
    const size_t slot = size_t(P.DV + 2);
    plan.scratch_floats = size_t(T * P.D)                                   // q rows in F32
                          + size_t(T * kernels::kChunkKeys)                 // bias
                          + size_t(2 * T) + size_t(T * P.DV)                // chunk m, s, acc
                          + size_t(T) * size_t(plan.tree_levels + 1) * slot // merge tree (+1: the incoming partial)
                          + plan.kernels->scratch_floats(P.D, P.DV, T);

    int threads = P.params.n_threads;
    if (threads == 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    plan.n_workers = int(std::max<int64_t>(1, std::min<int64_t>(threads, int64_t(plan.tiles.size()))));
    return plan;
}

} // namespace fst
