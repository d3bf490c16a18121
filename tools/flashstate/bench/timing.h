// `flashstate bench`: timing a case (the median of its runs on rotated copies, its roofline) and the slowdowns of
// cases against a base case from interleaved rounds.
#pragma once

#include "bench.h"
#include "bench/cases.h"
#include "bench/kv_copies.h"
#include "bench/machine.h"

#include <string>
#include <vector>

namespace flashstate_tool::bench {

// One case's measurements and check.
struct Result {
    const Case *c = nullptr;
    int64_t copies = 0;
    double kv_bytes = 0, flops = 0;
    double median_ms = 0, min_ms = 0, max_ms = 0;
    double roofline_ms = 0;
    bool memory_bound = true;
    double check = 0;
    bool check_ok = false;

    double kv_gbs() const { return kv_bytes / (median_ms * 1e-3) / 1e9; }
    double gflops() const { return flops / (median_ms * 1e-3) / 1e9; }
    double fraction() const { return roofline_ms / median_ms; }
};

// What the arena holds: the storage of the copies ("f16:32768 ..."), and the copy the next run reads. Cases that
// differ only in threads or segmentation share a fill and continue its rotation, so that between two reads of a
// copy every other copy is read once (at least the DRAM buffer in all).
struct ArenaState {
    std::string storage;
    int64_t next_copy = 0;
};

// The case's time if it ran at the machine's limits: its KV bytes at the DRAM read rate or its flops at the FMA
// peak, whichever takes longer (cache-resident cases: the flops only).
void set_roofline(Result &res, const Limits &limits);

// Fills (or reuses) the copies, checks one untimed run, then times `runs` runs on rotated copies.
Result run_case(const Case &c, const BenchOptions &o, int runs, const Limits &limits, const BigBuffer &arena,
                RowPools &pools, ArenaState &state);

// Slowdowns of other cases against a base case, from interleaved runs: each round times the base and the others
// back to back (rotating who goes first), and the slowdown is the median over rounds of other / base. This guest's
// speed drifts by 10-40 % between minutes, enough to decide a 5 % target when the cases' own medians were taken
// minutes apart; within a round all of them see the same machine. Cases must share their storage (one fill).
struct Paired {
    int rounds = 0;
    std::vector<double> ratios; // per other case, in the order given; 0 for a case not selected
};

Paired paired_ratios(const Case *base, const std::vector<const Case *> &others, const BenchOptions &o, int rounds,
                     const Limits &limits, const BigBuffer &arena, RowPools &pools, ArenaState &state);

} // namespace flashstate_tool::bench
