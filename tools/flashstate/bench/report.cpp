#include "bench/report.h"

#include <cstdio>
#include <string>

namespace flashstate_tool::bench {
namespace {

const Result *find(const std::vector<Result> &results, const std::string &name) {
    for (const Result &r : results)
        if (r.c->name == name) return &r;
    return nullptr;
}

// Prints one target line; returns false when it failed (a skipped target does not fail).
bool target_line(const char *prefix, const char *what, const Result *r, bool pass, const std::string &measured) {
    if (r == nullptr) {
        std::printf("%sSKIP  %s: case not run\n", prefix, what);
        return true;
    }
    if (!r->check_ok) {
        std::printf("%sFAIL  %s: the result check failed (error %.2e)\n", prefix, what, r->check);
        return false;
    }
    std::printf("%s%s  %s: %s\n", prefix, pass ? "PASS" : "FAIL", what, measured.c_str());
    return pass;
}

std::string format(const char *fmt, double a, double b = 0, double c = 0) {
    char text[160];
    std::snprintf(text, sizeof text, fmt, a, b, c);
    return text;
}

// Issue 4 item 6: the 32k cache in 64 segments, "one call each, or one multi-segment call", at most 5 % slower than
// in one call. Both ways are timed; the target holds when either does. The slowdowns judged are those of the
// interleaved rounds (paired_ratios); the ratios of the cases' own medians are printed beside them. Returns false
// when it failed.
bool split_target(const char *prefix, const std::vector<Result> &results, const Paired &paired) {
    const SplitCases names = split_cases();
    const Result *one = find(results, names.one), *calls = find(results, names.calls),
                 *multiseg = find(results, names.multiseg);
    const std::string what = names.calls + " or " + names.multiseg + " <= 5% slower than " + names.one;
    const Result *shown = multiseg ? multiseg : calls;
    if (one == nullptr || shown == nullptr || paired.rounds == 0) return target_line(prefix, what.c_str(), nullptr, false, "");
    for (const Result *r : {one, calls, multiseg})
        if (r && !r->check_ok) return target_line(prefix, what.c_str(), r, false, "");
    bool pass = false;
    std::string interleaved = format("interleaved over %.0f rounds: ", paired.rounds), separate = "the cases' medians: ";
    for (size_t i = 0; i < 2; ++i) {
        const Result *r = i == 0 ? calls : multiseg;
        if (r == nullptr) continue;
        const char *label = i == 0 ? "64 calls %+.1f%%, " : "one 64-segment call %+.1f%%, ";
        pass = pass || paired.ratios[i] <= 1.05;
        interleaved += format(label, 100 * (paired.ratios[i] - 1));
        separate += format(label, 100 * (r->median_ms / one->median_ms - 1));
    }
    return target_line(prefix, what.c_str(), shown, pass, interleaved + separate + format("one call %.3f ms", one->median_ms));
}

} // namespace

void print_result(const Result &r, bool csv) {
    const Case &c = *r.c;
    const double ggml_x = c.ggml_ms > 0 ? c.ggml_ms / r.median_ms : 0.0;
    std::string types;
    int64_t segments = 0;
    for (const Tier &t : c.tiers) {
        types += std::string(types.empty() ? "" : "+") + fst_type_name(t.type);
        segments += t.segments;
    }
    if (csv) {
        std::printf("%s,%s,%lld,%lld,%lld,%d,%lld,%.0f,%.0f,%.4f,%.4f,%.4f,%.3f,%.2f,%.4f,%.4f,%s,%.3g,%s,%.2f,%.2f\n",
                    c.name.c_str(), types.c_str(), (long long)c.n_kv(), (long long)c.n_q, (long long)segments,
                    c.threads, (long long)r.copies, r.kv_bytes, r.flops, r.median_ms, r.min_ms, r.max_ms, r.kv_gbs(),
                    r.gflops(), r.roofline_ms, r.fraction(), r.memory_bound ? "memory" : "fma", r.check,
                    r.check_ok ? "ok" : "FAIL", c.ggml_ms, ggml_x);
        return;
    }
    char ggml[16] = "-";
    if (ggml_x > 0) std::snprintf(ggml, sizeof ggml, "%.2fx", ggml_x);
    std::printf("%-30s %8.1f %6lld %9.3f %6.1f%% %7.2f %8.1f %9.3f %6.1f%% %-6s %7s %9.1e %s\n", c.name.c_str(),
                r.kv_bytes / double(kMiB), (long long)r.copies, r.median_ms,
                100.0 * (r.max_ms - r.min_ms) / r.median_ms, r.kv_gbs(), r.gflops(), r.roofline_ms,
                100.0 * r.fraction(), r.memory_bound ? "memory" : "fma", ggml, r.check,
                r.check_ok ? "ok" : "FAIL");
}

void print_table_header(bool csv) {
    if (csv) {
        std::printf("case,kv_types,n_kv,n_q,segments,threads,copies,kv_bytes,flops,median_ms,min_ms,max_ms,kv_gbs,"
                    "gflops,roofline_ms,roofline_fraction,bound,check_error,check,ggml_ms,speedup_vs_ggml\n");
        return;
    }
    std::printf("%-30s %8s %6s %9s %7s %7s %8s %9s %7s %-6s %7s %9s %s\n", "case", "KV MiB", "copies", "ms",
                "spread", "GB/s", "GFLOP/s", "roof ms", "roof", "bound", "ggml", "check", "");
}

int print_targets(const std::vector<Result> &results, const Paired &split, const Limits &limits, bool csv) {
    const char *prefix = csv ? "# " : "";
    const std::string t = "-t" + std::to_string(kTargetThreads);
    int failed = 0;
    struct DecodeTarget {
        fst_type type;
        double roofline, vs_ggml;
    };
    const DecodeTarget decode[] = {{FST_TYPE_F16, 0.75, 2.5}, {FST_TYPE_Q8_0, 0.60, 8.0}, {FST_TYPE_Q4_0, 0.45, 8.0}};
    for (const DecodeTarget &d : decode)
        for (int64_t n_kv : {32768, 131072}) {
            const std::string name = std::string("decode-") + fst_type_name(d.type) + "-" + kilo(n_kv) + t;
            const Result *r = find(results, name);
            const std::string what = name + " roofline fraction >= " + format("%.0f%%", 100 * d.roofline);
            failed += !target_line(prefix, what.c_str(), r, r && r->fraction() >= d.roofline,
                                   r ? format("%.1f%% (%.3f ms, roofline %.3f ms)", 100 * r->fraction(), r->median_ms,
                                              r->roofline_ms)
                                     : "");
        }
    // The ggml table was measured on an Intel Xeon: on another CPU its ratios compare two machines, not two kernels.
    const std::string cpu = cpu_model();
    if (cpu.find("Intel") == std::string::npos)
        std::printf("%snote: the ggml times are issue 4's, from an Intel Xeon; this CPU is %s, so the vs-ggml lines "
                    "compare across machines (bench/ggml_compare measures both in one run)\n",
                    prefix, cpu.c_str());
    for (const DecodeTarget &d : decode)
        for (int64_t n_kv : {32768, 131072}) {
            const std::string name = std::string("decode-") + fst_type_name(d.type) + "-" + kilo(n_kv) + t;
            const Result *r = find(results, name);
            const double x = r ? r->c->ggml_ms / r->median_ms : 0;
            const std::string what = name + " vs ggml >= " + format("%.1fx", d.vs_ggml);
            // ggml's machine read 31.5 GB/s at 2 threads; what the ratio asks of this one's memory tells whether
            // the target is reachable here at all.
            const double needed_gbs = r ? r->kv_bytes / (r->c->ggml_ms / d.vs_ggml * 1e-3) / 1e9 : 0;
            std::string measured = r ? format("%.2fx (ggml %.1f ms, here %.3f ms; ", x, r->c->ggml_ms, r->median_ms) +
                                           format("%.1fx needs %.1f GB/s of KV read, ", d.vs_ggml, needed_gbs) +
                                           format("this machine reads %.1f GB/s)", limits.at(kTargetThreads).dram_gbs)
                                     : "";
            failed += !target_line(prefix, what.c_str(), r, x >= d.vs_ggml, measured);
        }
    failed += !split_target(prefix, results, split);
    {
        const std::string name = "prefill-f16-4k-q512" + t;
        const Result *r = find(results, name);
        const double peak = limits.at(kTargetThreads).fma_gflops;
        const double fraction = r ? r->gflops() / peak : 0;
        failed += !target_line(prefix, (name + " >= 50% of the F32 FMA peak").c_str(), r, fraction >= 0.5,
                               format("%.1f%% (%.1f of %.1f GFLOP/s)", 100 * fraction, r ? r->gflops() : 0, peak));
    }
    return failed;
}

} // namespace flashstate_tool::bench
