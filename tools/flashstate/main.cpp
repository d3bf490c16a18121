// The `flashstate` command-line program: `flashstate demo [options]`, `flashstate cache-study [options]`,
// `flashstate bench [options]`, `flashstate version`, `flashstate --help`.
#include "bench.h"
#include "cache_study.h"
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
using flashstate_tool::StudyOptions;

const char *const kUsage = "usage: flashstate <command> [options]\n"
                           "\n"
                           "commands:\n"
                           "  demo         decode a layer over the mixed-precision KV cache: memory, error, time\n"
                           "  cache-study  the cache's accuracy study and speed comparison (docs/cache-accuracy.md)\n"
                           "  bench        machine limits, then decode/prefill/segment cases against the roofline\n"
                           "  version      versions of the library and of the header, and the kernel ISA in use\n"
                           "  help         this text (also -h, --help); `flashstate <command> --help`\n"
                           "\n";

const char *const kDemoUsage =
    "usage: flashstate demo [options]\n"
    "\n"
    "Decodes a model-shaped layer token by token over the mixed-precision KV cache: each step appends the token's\n"
    "K and V to the cache - a hot F16 tier, then Q8_0 in RAM, then Q4_0 in a memory-mapped file in a temporary\n"
    "directory (removed at exit) - and attends the token's query, every head, causal, over all of it in one\n"
    "fst_cache_attn call. K has a few large-magnitude outlier channels per KV head, as real models' keys do; V is\n"
    "smooth (docs/cache-accuracy.md). At evenly spaced checkpoints it prints the tokens per tier, the error against\n"
    "one fst_attn_with_state call over what the cache stores (bound 4e-6, SPEC section 4) and against the same\n"
    "attention over the original F32 K/V (what quantized storage costs; bound 0.25, which only a broken cache\n"
    "exceeds) and the median decode time per token; then the memory per tier and the time totals. A progress bar\n"
    "goes to stderr (one line per 10% when stderr is not a terminal). Exits 1 if an error exceeds its bound.\n"
    "\n"
    "options (value as `--opt N` or `--opt=N`; defaults in brackets):\n"
    "  --heads N        query heads [32]\n"
    "  --kv-heads N     KV heads; --heads must be a multiple [8]\n"
    "  --dim N          head dimension D of q, K and V, a multiple of 32 [128]\n"
    "  --tokens N       tokens streamed through the cache, one decode step each [4096]\n"
    "  --hot N          capacity of the F16 tier [256]\n"
    "  --warm N         capacity of the Q8_0 tier; older tokens go to the Q4_0 file [1024]\n"
    "  --chunk N        tokens moved from one tier to the next at once [32]\n"
    "  --keep N         first tokens kept at F16 forever (attention sinks) [0]\n"
    "  --outliers N     large-magnitude K channels per KV head [4]\n"
    "  --checkpoints N  evenly spaced points where the errors are measured [8]\n"
    "  --seed N         random seed of K, V (seed) and the queries (seed + 1) [42]\n"
    "  --threads N      threads per call, 0 = every hardware thread [0]\n"
    "  -h, --help       this text\n";

const char *const kStudyUsage =
    "usage: flashstate cache-study [options]\n"
    "\n"
    "The numbers of docs/cache-accuracy.md, on the demo's synthetic layer (32 query heads, 8 KV heads, D 128).\n"
    "Accuracy (default): for K with --outliers outlier channels per KV head and without, cold tier Q8_0 and Q4_0,\n"
    "and hot F16 windows 0 (none), 64, 256, 1024, streams --tokens tokens into the cache and\n"
    "compares fst_cache_attn at --queries positions over the second half with attention over all-F16 copies of\n"
    "the same tokens.\n"
    "--speed: one decode step over 4k and 32k tokens, median of --runs interleaved runs: one flat F16 buffer,\n"
    "one flat Q8_0 buffer, an all-F16 cache and a 256-token F16 + Q8_0 cache; prints ms and ratios. Exits 1\n"
    "if an error is not finite, or a cache's result differs from the same stored values in flat buffers by\n"
    "more than 4e-6 (--speed).\n"
    "\n"
    "options (value as `--opt N` or `--opt=N`; defaults in brackets):\n"
    "  --speed          the speed comparison instead of the accuracy study\n"
    "  --csv PATH       accuracy: also write the table as CSV to PATH (scripts/plot_cache_accuracy.py plots it)\n"
    "  --tokens N       accuracy: tokens per stream [4096]\n"
    "  --queries N      accuracy: query positions [32]\n"
    "  --outliers N     K outlier channels per KV head [4]\n"
    "  --runs N         speed: timed runs per case [15]\n"
    "  --seed N         random seed [42]\n"
    "  --threads N      threads per call, 0 = every hardware thread [0]\n"
    "  -h, --help       this text\n";

const char *const kBenchUsage =
    "usage: flashstate bench [options]\n"
    "\n"
    "Measures the machine's limits first - DRAM read bandwidth (GB/s = 1e9 bytes/s) over a buffer well past the\n"
    "L3, and the F32 FMA peak (GFLOP/s, 2 flops per lane) with the widest vector unit - at each thread count,\n"
    "then times each case (32 query heads, 8 KV heads, D = DV = 128, q, K, V ~ N(0,1)): decode (n_q 1) at n_kv\n"
    "4k, 32k, 128k with K/V in F16, Q8_0, Q4_0 (decode-*), 32k F16 with softcap 50 (*-softcap50-*); causal\n"
    "prefill, n_q 512, n_kv 4k, F16 (prefill-*); the 32k F16 cache in 1, 8, 64, 512 segments, one\n"
    "fst_attn_with_state call each (split-*) or one fst_attn_segments call (multiseg-*); 32k with the newest 4k\n"
    "tokens F16 and the older ones Q8_0 (*mixed-*).\n"
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
        {"--tokens", 1, [](DemoOptions &d, long long v) { d.tokens = v; }},
        {"--hot", 1, [](DemoOptions &d, long long v) { d.hot = v; }},
        {"--warm", 1, [](DemoOptions &d, long long v) { d.warm = v; }},
        {"--chunk", 1, [](DemoOptions &d, long long v) { d.chunk = v; }},
        {"--keep", 0, [](DemoOptions &d, long long v) { d.keep = v; }},
        {"--outliers", 0, [](DemoOptions &d, long long v) { d.outliers = v; }},
        {"--checkpoints", 1, [](DemoOptions &d, long long v) { d.checkpoints = v; }},
        {"--seed", 0, [](DemoOptions &d, long long v) { d.seed = uint64_t(v); }},
        {"--threads", 0, [](DemoOptions &d, long long v) { d.threads = int32_t(v); }},
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

// Parses `cache-study` options into o. Returns -1 to go on, or the exit code to return now (0 after --help).
int parse_study_options(int argc, char **argv, StudyOptions &o) {
    for (int i = 0; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::fputs(kStudyUsage, stdout);
            return 0;
        }
        if (arg == "--speed") {
            o.speed = true;
            continue;
        }
        const size_t eq = arg.find('=');
        const std::string name = arg.substr(0, eq);
        const char *text = nullptr;
        if (eq != std::string::npos)
            text = argv[i] + eq + 1;
        else if (i + 1 < argc)
            text = argv[++i];
        if (name == "--csv") {
            if (text == nullptr || *text == '\0') {
                std::fprintf(stderr, "flashstate cache-study: --csv needs a path\n");
                return 2;
            }
            o.csv = text;
            continue;
        }
        if (name != "--tokens" && name != "--queries" && name != "--outliers" && name != "--runs" &&
            name != "--seed" && name != "--threads") {
            std::fprintf(stderr, "flashstate cache-study: unknown option '%s' (see flashstate cache-study --help)\n",
                         arg.c_str());
            return 2;
        }
        const long long min = name == "--tokens" || name == "--queries" || name == "--runs" ? 1 : 0;
        long long value = 0;
        if (!parse_integer(text, value) || value < min || value > (1ll << 40)) {
            std::fprintf(stderr, "flashstate cache-study: %s needs an integer >= %lld\n", name.c_str(), min);
            return 2;
        }
        if (name == "--tokens") o.tokens = value;
        else if (name == "--queries") o.queries = value;
        else if (name == "--outliers") o.outliers = value;
        else if (name == "--runs") o.runs = int(std::min(value, 1ll << 20));
        else if (name == "--seed") o.seed = uint64_t(value);
        else o.threads = int32_t(std::min(value, 4096ll));
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
            std::fputs("\n", stdout);
            std::fputs(kStudyUsage, stdout);
            return 0;
        }
        if (command == "version" || command == "--version") return print_version();
        if (command == "demo") {
            DemoOptions options;
            const int code = parse_demo_options(argc - 2, argv + 2, options);
            if (code >= 0) return code;
            return flashstate_tool::run_demo(options);
        }
        if (command == "cache-study") {
            StudyOptions options;
            const int code = parse_study_options(argc - 2, argv + 2, options);
            if (code >= 0) return code;
            return options.speed ? flashstate_tool::run_speed_study(options)
                                 : flashstate_tool::run_accuracy_study(options);
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
