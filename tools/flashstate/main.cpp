// The `flashstate` command-line program: `flashstate demo [options]`, `flashstate bench [options]`,
// `flashstate version`, `flashstate --help`.
#include "bench.h"
#include "demo.h"

#include <flashstate/flashstate.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using flashstate_tool::BenchOptions;
using flashstate_tool::DemoOptions;

const char *const kUsage = "usage: flashstate <command> [options]\n"
                           "\n"
                           "commands:\n"
                           "  demo       segmented attention over a mixed-precision KV cache, checked and timed\n"
                           "  bench      machine limits, then decode/prefill/segment cases against the roofline\n"
                           "  version    versions of the library and of the header, and the kernel ISA in use\n"
                           "  help       this text (also -h, --help); `flashstate demo --help`, `flashstate bench --help`\n"
                           "\n";

const char *const kDemoUsage =
    "usage: flashstate demo [options]\n"
    "\n"
    "Builds a model-shaped layer (q, K, V ~ N(0,1)), stores the KV cache in three tiers - the oldest tokens as\n"
    "Q4_0, the next as Q8_0, the newest as F16 - and attends the last --n-q positions to it with a causal mask:\n"
    "once segment by segment with carried state, once unsplit over the same stored values (dequantized to F32).\n"
    "Prints the errors against each other and against a double-precision softmax over the stored values, the\n"
    "error of the mixed cache against the original F32 values (information), bytes per storage type and the\n"
    "median time of each pass. Exits 1 if segmented vs unsplit > 4e-6 or a result vs the reference > 1e-5.\n"
    "\n"
    "options (value as `--opt N` or `--opt=N`; defaults in brackets):\n"
    "  --heads N      query heads [32]\n"
    "  --kv-heads N   KV heads; --heads must be a multiple [8]\n"
    "  --dim N        head dimension D of q, K and V, a multiple of 32 [128]\n"
    "  --n-kv N       tokens in the KV cache [4096]\n"
    "  --n-q N        query rows, at positions n_kv - n_q .. n_kv - 1 [16]\n"
    "  --segment N    tokens per segment; a tier's last segment may be shorter [256]\n"
    "  --hot N        newest tokens stored as F16 [n_kv / 4]\n"
    "  --warm N       next-newest tokens stored as Q8_0; the rest (oldest) is Q4_0 [n_kv / 4]\n"
    "  --seed N       random seed for q, K and V [42]\n"
    "  --threads N    threads per call, 0 = every hardware thread [0]\n"
    "  --runs N       timed repetitions of each pass; the median is printed [5]\n"
    "  -h, --help     this text\n";

const char *const kBenchUsage =
    "usage: flashstate bench [options]\n"
    "\n"
    "Measures the machine's limits first - DRAM read bandwidth (GB/s = 1e9 bytes/s) over a buffer well past the\n"
    "L3, and the F32 FMA peak (GFLOP/s, 2 flops per lane) with the widest vector unit - at each thread count,\n"
    "then times each case (32 query heads, 8 KV heads, D = DV = 128, q, K, V ~ N(0,1)): decode (n_q 1) at n_kv\n"
    "4k, 32k, 128k with K/V in F16, Q8_0, Q4_0 (decode-*); causal prefill, n_q 512, n_kv 4k, F16 (prefill-*);\n"
    "the 32k F16 cache in 1, 8, 64, 512 segments, one fst_attn_with_state call each (split-*) or one\n"
    "fst_attn_segments call (multiseg-*); 32k with the newest 4k tokens F16 and the older ones Q8_0 (*mixed-*).\n"
    "Each case reads rotated copies of its cache (together at least the DRAM buffer), so no run finds its K/V\n"
    "in the cache; its first, untimed run is checked against a double-precision softmax (bound 1e-5).\n"
    "Columns: KV MiB read per run, copies, median ms, spread (max - min) / median, KV GB/s, GFLOP/s over\n"
    "visible (row, head, key) pairs at 2*D + 2*DV flops each, the roofline time max(KV bytes / DRAM GB/s,\n"
    "flops / FMA GFLOP/s) at the case's thread count, roof = roofline time / median time, the bound that\n"
    "sets it, the speed-up over ggml's time from issue 4, the check error. Then one PASS/FAIL line per\n"
    "target of issue 4 (2 threads). Exits 0 even if a target fails (unless --strict), 1 if a check fails.\n"
    "\n"
    "options (value as `--opt V` or `--opt=V`; defaults in brackets):\n"
    "  --quick          small cases (n_kv 4k, prefill 64 x 1k, 64 MiB buffer, 3 runs): a smoke run\n"
    "  --case LIST      run only cases whose name contains one of these comma-separated strings [all]\n"
    "  --threads LIST   comma-separated thread counts of the decode cases; the other cases run at the\n"
    "                   largest [1,2,hardware threads]\n"
    "  --runs N         timed runs per case, the median is reported [9; 3 with --quick]\n"
    "  --isa NAME       auto, portable, avx2 or avx512: fst_attn_params.isa of every call (an upper bound;\n"
    "                   FLASHSTATE_ISA in the environment lowers auto) [auto]\n"
    "  --buffer-mib N   DRAM buffer in MiB [max(4 x reported L3 capped at 2048, 1024); 64 with --quick]\n"
    "  --csv            print the case table as CSV; every other line starts with '#'\n"
    "  --strict         exit 1 when a target fails\n"
    "  -h, --help       this text\n";

int print_version() {
    std::printf("library  %s\n", flashstate::version().c_str());
    std::printf("header   %s\n", FLASHSTATE_VERSION_STRING);
    std::printf("isa      %s\n", fst_isa_name(fst_isa_best()));
    return 0;
}

// Reads a whole-string integer; false if `text` is not one.
bool parse_integer(const char *text, long long &value) {
    if (text == nullptr || *text == '\0') return false;
    char *end = nullptr;
    errno = 0;
    value = std::strtoll(text, &end, 10);
    return errno == 0 && *end == '\0';
}

// Parses `demo` options into o. Returns -1 to go on, or the exit code to return now (0 after --help).
int parse_demo_options(int argc, char **argv, DemoOptions &o) {
    struct Option {
        const char *name;
        long long min;
        void (*set)(DemoOptions &, long long);
    };
    static const Option options[] = {
        {"--heads", 1, [](DemoOptions &d, long long v) { d.n_head = v; }},
        {"--kv-heads", 1, [](DemoOptions &d, long long v) { d.n_head_kv = v; }},
        {"--dim", 32, [](DemoOptions &d, long long v) { d.dim = v; }},
        {"--n-kv", 1, [](DemoOptions &d, long long v) { d.n_kv = v; }},
        {"--n-q", 1, [](DemoOptions &d, long long v) { d.n_q = v; }},
        {"--segment", 1, [](DemoOptions &d, long long v) { d.segment = v; }},
        {"--hot", 0, [](DemoOptions &d, long long v) { d.hot = v; }},
        {"--warm", 0, [](DemoOptions &d, long long v) { d.warm = v; }},
        {"--seed", 0, [](DemoOptions &d, long long v) { d.seed = uint64_t(v); }},
        {"--threads", 0, [](DemoOptions &d, long long v) { d.threads = int32_t(v); }},
        {"--runs", 1, [](DemoOptions &d, long long v) { d.runs = int(v); }},
    };
    for (int i = 0; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::fputs(kDemoUsage, stdout);
            return 0;
        }
        const size_t eq = arg.find('=');
        const std::string name = arg.substr(0, eq);
        const Option *match = nullptr;
        for (const Option &opt : options)
            if (name == opt.name) match = &opt;
        if (match == nullptr) {
            std::fprintf(stderr, "flashstate demo: unknown option '%s' (see flashstate demo --help)\n", arg.c_str());
            return 2;
        }
        const char *text = nullptr;
        if (eq != std::string::npos)
            text = argv[i] + eq + 1;
        else if (i + 1 < argc)
            text = argv[++i];
        long long value = 0;
        if (!parse_integer(text, value) || value < match->min || value > (1ll << 40)) {
            std::fprintf(stderr, "flashstate demo: %s needs an integer >= %lld\n", match->name, match->min);
            return 2;
        }
        match->set(o, value);
    }
    return -1;
}

// Splits "a,b,c" into its non-empty parts.
std::vector<std::string> split_list(const std::string &text) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = std::min(text.find(',', start), text.size());
        if (comma > start) parts.push_back(text.substr(start, comma - start));
        start = comma + 1;
    }
    return parts;
}

// Parses `bench` options into o. Returns -1 to go on, or the exit code to return now (0 after --help).
int parse_bench_options(int argc, char **argv, BenchOptions &o) {
    for (int i = 0; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::fputs(kBenchUsage, stdout);
            return 0;
        }
        const size_t eq = arg.find('=');
        const std::string name = arg.substr(0, eq);
        if (name == "--quick" || name == "--csv" || name == "--strict") {
            if (eq != std::string::npos) {
                std::fprintf(stderr, "flashstate bench: %s takes no value\n", name.c_str());
                return 2;
            }
            if (name == "--quick") o.quick = true;
            if (name == "--csv") o.csv = true;
            if (name == "--strict") o.strict = true;
            continue;
        }
        if (name != "--case" && name != "--threads" && name != "--runs" && name != "--isa" &&
            name != "--buffer-mib") {
            std::fprintf(stderr, "flashstate bench: unknown option '%s' (see flashstate bench --help)\n", arg.c_str());
            return 2;
        }
        const char *text = nullptr;
        if (eq != std::string::npos)
            text = argv[i] + eq + 1;
        else if (i + 1 < argc)
            text = argv[++i];
        if (text == nullptr || *text == '\0') {
            std::fprintf(stderr, "flashstate bench: %s needs a value\n", name.c_str());
            return 2;
        }
        long long value = 0;
        if (name == "--case") {
            o.filters = split_list(text);
        } else if (name == "--threads") {
            o.threads.clear();
            for (const std::string &part : split_list(text)) {
                if (!parse_integer(part.c_str(), value) || value < 1 || value > 4096) {
                    std::fprintf(stderr, "flashstate bench: --threads needs integers >= 1, e.g. 1,2\n");
                    return 2;
                }
                o.threads.push_back(int(value));
            }
            if (o.threads.empty()) {
                std::fprintf(stderr, "flashstate bench: --threads needs integers >= 1, e.g. 1,2\n");
                return 2;
            }
        } else if (name == "--runs" || name == "--buffer-mib") {
            const long long min = name == "--runs" ? 1 : 16;
            if (!parse_integer(text, value) || value < min || value > (1ll << 20)) {
                std::fprintf(stderr, "flashstate bench: %s needs an integer >= %lld\n", name.c_str(), min);
                return 2;
            }
            if (name == "--runs")
                o.runs = int(value);
            else
                o.buffer_mib = value;
        } else { // --isa
            const std::string isa = text;
            if (isa == "auto") o.isa = FST_ISA_AUTO;
            else if (isa == "portable") o.isa = FST_ISA_PORTABLE;
            else if (isa == "avx2") o.isa = FST_ISA_AVX2;
            else if (isa == "avx512") o.isa = FST_ISA_AVX512;
            else {
                std::fprintf(stderr, "flashstate bench: --isa needs auto, portable, avx2 or avx512\n");
                return 2;
            }
        }
    }
    return -1;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fputs(kUsage, stderr);
        std::fputs(kDemoUsage, stderr);
        return 2;
    }
    const std::string command = argv[1];
    try {
        if (command == "-h" || command == "--help" || command == "help") {
            std::fputs(kUsage, stdout);
            std::fputs(kDemoUsage, stdout);
            std::fputs("\n", stdout);
            std::fputs(kBenchUsage, stdout);
            return 0;
        }
        if (command == "version" || command == "--version") return print_version();
        if (command == "demo") {
            DemoOptions options;
            const int code = parse_demo_options(argc - 2, argv + 2, options);
            if (code >= 0) return code;
            return flashstate_tool::run_demo(options);
        }
        if (command == "bench") {
            BenchOptions options;
            const int code = parse_bench_options(argc - 2, argv + 2, options);
            if (code >= 0) return code;
            return flashstate_tool::run_bench(options);
        }
    } catch (const flashstate::Error &e) {
        std::fprintf(stderr, "flashstate %s: %s (%s)\n", command.c_str(), e.what(), fst_status_name(e.status()));
        return 3;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "flashstate %s: %s\n", command.c_str(), e.what());
        return 3;
    }
    std::fprintf(stderr, "flashstate: unknown command '%s' (see flashstate --help)\n", command.c_str());
    return 2;
}
