// `flashstate bench`: measures the machine's limits, then times model-shaped attention cases against the roofline
// and prints a PASS/FAIL line per target of issue 4 (see docs/PERFORMANCE.md for the definitions). The parts live in
// bench/: the machine and its limits (machine), the cases (cases), their K/V copies and check (kv_copies), timing
// (timing) and the report (report).
//
// Every case reads its KV cache from one of several copies, rotated from run to run, whose total size is at least
// the DRAM buffer: a run never finds its K/V in the cache left by the previous one. The first (untimed) run of each
// case is checked against a double-precision softmax over the same stored values, so a wrong kernel cannot post a
// good time.
#include "bench.h"

#include "bench/cases.h"
#include "bench/kv_copies.h"
#include "bench/machine.h"
#include "bench/report.h"
#include "bench/timing.h"
#include "peak/peak.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace flashstate_tool {
namespace {

using namespace bench;

constexpr int kSamplePasses = 3; // timed passes of each DRAM sample taken between the cases

fst_isa effective_isa(fst_isa requested) {
    const fst_isa best = fst_isa_best();
    if (requested == FST_ISA_AUTO) return best;
    return requested < best ? requested : best;
}

} // namespace

int run_bench(const BenchOptions &options) {
    BenchOptions o = options;
    const int hardware = int(std::max(1u, std::thread::hardware_concurrency()));
    if (o.threads.empty()) o.threads = {1, kTargetThreads, hardware};
    std::sort(o.threads.begin(), o.threads.end());
    o.threads.erase(std::unique(o.threads.begin(), o.threads.end()), o.threads.end());
    const int runs = o.runs > 0 ? o.runs : (o.quick ? 3 : 9);

    std::vector<Case> cases;
    for (const Case &c : make_cases(o.quick, o.threads))
        if (selected(c, o.filters)) cases.push_back(c);
    if (cases.empty()) {
        std::fprintf(stderr, "flashstate bench: no case matches --case\n");
        return 2;
    }

    const size_t l3 = reported_l3_bytes();
    const size_t buffer_bytes = o.buffer_mib > 0 ? size_t(o.buffer_mib) * kMiB
                                : o.quick       ? 64 * kMiB
                                                : default_buffer_bytes(l3);
    // One arena serves the bandwidth loop and then, case after case, the rotated KV copies.
    size_t arena_bytes = buffer_bytes;
    for (const Case &c : cases) {
        const Layout l = make_layout(c, buffer_bytes);
        arena_bytes = std::max(arena_bytes, size_t(l.copies) * l.copy_bytes);
    }
    const BigBuffer arena(arena_bytes);
    std::memset(arena.data(), 0x5a, arena.size()); // fault every page in before anything is timed

    const char *prefix = o.csv ? "# " : "";
    const char *env_isa = std::getenv("FLASHSTATE_ISA");
    std::printf("%sflashstate %s bench%s\n", prefix, flashstate::version().c_str(), o.quick ? " --quick" : "");
    std::printf("%scpu: %s, %d hardware threads, L3 reported %.0f MiB\n", prefix, cpu_model().c_str(), hardware,
                double(l3) / double(kMiB));
    std::printf("%skernel isa: %s (requested %s, FLASHSTATE_ISA=%s); load average %.2f\n", prefix,
                fst_isa_name(effective_isa(o.isa)), fst_isa_name(o.isa), env_isa ? env_isa : "unset", load_average());
    std::printf("%sshape: %lld query heads, %lld KV heads, D = DV = %lld, scale 1/sqrt(D), q, K, V ~ N(0,1); "
                "median of %d runs; arena %.0f MiB\n\n",
                prefix, (long long)kHeads, (long long)kHeadsKv, (long long)kDim, runs,
                double(arena.size()) / double(kMiB));
    std::fflush(stdout);

    const CpuTimes cpu_start = cpu_times();
    const auto wall_start = std::chrono::steady_clock::now();
    // Limits at every thread count a selected case runs at (the cached cases run on 1 thread whatever --threads says).
    std::vector<int> limit_threads;
    for (const Case &c : cases) limit_threads.push_back(c.threads);
    std::sort(limit_threads.begin(), limit_threads.end());
    limit_threads.erase(std::unique(limit_threads.begin(), limit_threads.end()), limit_threads.end());
    const Limits limits = measure_limits(arena, buffer_bytes, limit_threads, o.quick);
    std::printf("%smachine limits (median of %d passes each): DRAM read over %.0f MiB, fastest read loop; F32 FMA, "
                "%s, 12 chains\n",
                prefix, limits.passes, double(buffer_bytes) / double(kMiB), peak::simd_name(limits.simd));
    print_limits(prefix, limits);
    std::printf("\n");

    print_table_header(o.csv);
    std::fflush(stdout);
    RowPools pools;
    ArenaState arena_state;
    std::vector<Result> results;
    bool checks_ok = true;
    DramSamples samples;
    for (const Case &c : cases) {
        results.push_back(run_case(c, o, runs, limits, arena, pools, arena_state));
        print_result(results.back(), o.csv);
        std::fflush(stdout);
        checks_ok = checks_ok && results.back().check_ok;
        if (!o.quick)
            samples.add(c.threads, peak::read_bandwidth_gbs(arena.data(), buffer_bytes, c.threads, kSamplePasses,
                                                            limits.at(c.threads).read_loop));
    }

    auto selected_case = [&](const std::string &name) -> const Case * {
        for (const Case &c : cases)
            if (c.name == name) return &c;
        return nullptr;
    };
    const SplitCases split = split_cases();
    const Paired paired = paired_ratios(selected_case(split.one), {selected_case(split.calls), selected_case(split.multiseg)},
                                        o, runs, limits, arena, pools, arena_state);

    // On a shared machine the limits move with the neighbours' load: measured again, they show whether the roofline
    // above still held at the end.
    const Limits after = measure_limits(arena, buffer_bytes, limit_threads, o.quick);
    std::printf("\n%smachine limits again, after the cases; load average %.2f\n", prefix, load_average());
    print_limits(prefix, after);
    bool moved = !o.quick && limits_moved(limits, after);
    for (const DramSamples::Range &r : samples.ranges) {
        std::printf("%sDRAM read between the cases, %d thread%s: %.2f - %.2f GB/s (%d samples of %d passes)\n", prefix,
                    r.threads, r.threads == 1 ? "" : "s", r.min_gbs, r.max_gbs, r.n, kSamplePasses);
        const double first = limits.at(r.threads).dram_gbs, last = after.at(r.threads).dram_gbs;
        moved = moved || std::max({r.max_gbs, first, last}) > 1.1 * std::min({r.min_gbs, first, last});
    }
    if (moved)
        std::printf("%sWARNING: a machine limit moved by more than 10%% during the run: other processes shared the "
                    "machine, and the roofline fractions in the table are unreliable\n", prefix);

    // Targets are judged against the highest DRAM rate and FMA peak seen in the run (the two full measurements and
    // the samples between the cases), so a limit read in a slow minute cannot pass one.
    Limits best = higher_limits(limits, after);
    samples.raise(best);
    for (Result &r : results) set_roofline(r, best);
    const Limit &target_limit = best.at(kTargetThreads);
    std::printf("\n%stargets (issue 4, %d threads), against the highest limits seen in the run (DRAM %.2f GB/s, "
                "FMA %.1f GFLOP/s); load average %.2f\n",
                prefix, kTargetThreads, target_limit.dram_gbs, target_limit.fma_gflops, load_average());
    // The bench itself keeps up to every core busy, so only a load above the hardware threads means others ran.
    const int failed = print_targets(results, paired, best, o.csv);
    const CpuTimes cpu_end = cpu_times();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    if (cpu_start.machine >= 0 && cpu_end.machine >= 0) {
        const double others = std::max(0.0, (cpu_end.machine - cpu_start.machine) - (cpu_end.self - cpu_start.self));
        const double share = others / (wall * hardware);
        std::printf("%sother processes (and the hypervisor) used %.1f%% of the machine's CPU time during the run%s\n",
                    prefix, 100 * share, share > 0.05 ? ": WARNING, more than 5%, every number above is unreliable" : "");
    }
    if (!checks_ok) std::printf("%sFAIL: a result differs from the double-precision reference by more than %.0e\n",
                                prefix, kCheckBound);
    if (!checks_ok) return 1;
    return o.strict && failed > 0 ? 1 : 0;
}

} // namespace flashstate_tool

