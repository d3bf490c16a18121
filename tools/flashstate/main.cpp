// The `flashstate` command-line program: `flashstate demo [options]`, `flashstate version`, `flashstate --help`.
#include "demo.h"

#include <flashstate/flashstate.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using flashstate_tool::DemoOptions;

const char *const kUsage = "usage: flashstate <command> [options]\n"
                           "\n"
                           "commands:\n"
                           "  demo       segmented attention over a mixed-precision KV cache, checked and timed\n"
                           "  version    versions of the library and of the header, and the kernel ISA in use\n"
                           "  help       this text (also -h, --help); `flashstate demo --help` for demo alone\n"
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
            return 0;
        }
        if (command == "version" || command == "--version") return print_version();
        if (command == "demo") {
            DemoOptions options;
            const int code = parse_demo_options(argc - 2, argv + 2, options);
            if (code >= 0) return code;
            return flashstate_tool::run_demo(options);
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
