// `flashstate bench`: the machine's limits (DRAM read bandwidth, F32 FMA peak), then decode, prefill and segmented
// cases timed against the roofline min(bandwidth limit, FMA limit), each result checked, and a PASS/FAIL line per
// performance target of issue 4 (docs/PERFORMANCE.md).
#pragma once

#include <flashstate/flashstate.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flashstate_tool {

struct BenchOptions {
    bool quick = false;                // small cases and buffers: a smoke run of every code path
    std::vector<std::string> filters;  // a case runs when its name contains one of these (every case when empty)
    std::vector<int> threads;          // thread counts of the decode cases; empty = 1, 2 and the hardware threads
    int runs = 0;                      // timed runs per case, the median is reported; 0 = 9 (3 with --quick)
    fst_isa isa = FST_ISA_AUTO;        // fst_attn_params.isa of every call
    bool csv = false;                  // the case table as CSV (other lines start with '#')
    bool strict = false;               // exit 1 when a target fails
    int64_t buffer_mib = 0;            // DRAM buffer; 0 = max(4 x L3 capped at 2 GiB, 1 GiB), 64 with --quick
};

// Runs the benchmark and prints its tables. Returns 0, or 1 when a result check failed (or, with --strict, a
// target), 2 on invalid options. Library failures surface as flashstate::Error.
int run_bench(const BenchOptions &options);

} // namespace flashstate_tool
