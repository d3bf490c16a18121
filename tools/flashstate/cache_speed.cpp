// `flashstate cache-study --speed`: one decode step (one query row, every head, causal, all tokens visible) over
// n_kv tokens of the synthetic layer, timed four ways on the same tokens:
//   flat-f16        fst_attn_with_state over one F16 buffer [D, n_kv, n_head_kv]  (the baseline)
//   flat-q8_0       the same over one Q8_0 buffer (the cost of the type alone)
//   cache-f16       fst_cache_attn over a cache with one unbounded F16 tier (the cost of the cache's segments alone)
//   cache-f16+q8_0  fst_cache_attn over a 256-token F16 hot tier + an unbounded Q8_0 tier (the mixed cache)
// The cases run interleaved (one run of each, then again), so that a change in the machine's load hits them alike;
// the medians and their ratios to flat-f16 are printed. The cache results are checked against the same stored
// values in flat buffers.
#include "cache_study.h"

#include "measure.h"
#include "synthetic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace flashstate_tool {
namespace {

constexpr int64_t kHot = 256;    // hot window of the mixed cache
constexpr int64_t kBatch = 1024; // tokens generated and appended at a time

struct FlatBuffer {
    fst_type type;
    std::vector<unsigned char> k, v;
    fst_tensor k_view{}, v_view{};
};

FlatBuffer make_flat(fst_type type, const StudyOptions &o, int64_t n_kv) {
    FlatBuffer b;
    b.type = type;
    const size_t row = flashstate::row_bytes(type, o.dim);
    b.k.resize(row * size_t(n_kv * o.n_head_kv));
    b.v.resize(b.k.size());
    b.k_view = flashstate::View::contiguous(type, b.k.data(), o.dim, n_kv, o.n_head_kv);
    b.v_view = flashstate::View::contiguous(type, b.v.data(), o.dim, n_kv, o.n_head_kv);
    return b;
}

// Tokens [first, first + n) of k, v F32 [D, n, n_head_kv] into the flat buffer, row by row; with `via_f16` rounded
// to F16 first, as the cache does when it moves a token from its F16 hot tier to a quantized one.
void store_rows(FlatBuffer &b, const StudyOptions &o, const std::vector<float> &k, const std::vector<float> &v,
                int64_t first, int64_t n, bool via_f16) {
    std::vector<uint16_t> half(size_t(o.dim));
    std::vector<float> rounded(size_t(o.dim));
    const auto store = [&](const float *src, unsigned char *dst) {
        if (via_f16) {
            check(fst_quantize_row(FST_TYPE_F16, src, half.data(), o.dim));
            check(fst_dequantize_row(FST_TYPE_F16, half.data(), rounded.data(), o.dim));
            src = rounded.data();
        }
        check(fst_quantize_row(b.type, src, dst, o.dim));
    };
    for (int64_t g = 0; g < o.n_head_kv; ++g)
        for (int64_t j = 0; j < n; ++j) {
            const size_t src = size_t((g * n + j) * o.dim);
            const size_t dst = size_t(g) * b.k_view.nb[2] + size_t(first + j) * b.k_view.nb[1];
            store(&k[src], b.k.data() + dst);
            store(&v[src], b.v.data() + dst);
        }
}

fst_cache_config speed_config(const StudyOptions &o, bool mixed) {
    fst_cache_config c = one_layer_config(o.n_head_kv, o.dim, 32);
    if (mixed) {
        c.n_tiers = 2;
        c.tiers[0] = fst_cache_tier{FST_TYPE_F16, kHot, nullptr};
        c.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 0, nullptr};
    } else {
        c.n_tiers = 1;
        c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 0, nullptr};
    }
    return c;
}

struct SpeedCase {
    const char *name;
    std::function<void(Result &)> run; // one decode step into the result (after reset)
    std::vector<double> ms;
};

// The load average of the last minute, or -1 when /proc/loadavg cannot be read.
double load_average() {
    std::ifstream f("/proc/loadavg");
    double load = -1;
    f >> load;
    return f ? load : -1.0;
}

// Returns false when a cache result leaves the bound against its flat twin.
bool measure_length(const StudyOptions &o, int64_t n_kv) {
    SyntheticShape shape;
    shape.n_head = o.n_head;
    shape.n_head_kv = o.n_head_kv;
    shape.dim = o.dim;
    shape.n_outliers = int(o.outliers);
    SyntheticLayer generator(shape, o.seed);

    FlatBuffer f16 = make_flat(FST_TYPE_F16, o, n_kv), q8 = make_flat(FST_TYPE_Q8_0, o, n_kv);
    CachePtr cache_f16 = make_cache(speed_config(o, false)), cache_mixed = make_cache(speed_config(o, true));
    std::vector<float> k, v, q;
    for (int64_t first = 0; first < n_kv; first += kBatch) {
        const int64_t n = std::min(kBatch, n_kv - first);
        k.resize(size_t(o.dim * n * o.n_head_kv));
        v.resize(k.size());
        q.resize(size_t(o.dim * n * o.n_head));
        generator.next(n, k.data(), v.data(), o.dim * n, q.data(), o.dim * n);
        store_rows(f16, o, k, v, first, n, false);
        store_rows(q8, o, k, v, first, n, true);
        const fst_tensor kt = flashstate::View::f32(k.data(), o.dim, n, o.n_head_kv);
        const fst_tensor vt = flashstate::View::f32(v.data(), o.dim, n, o.n_head_kv);
        check(fst_cache_append(cache_f16.get(), 0, &kt, &vt));
        check(fst_cache_append(cache_mixed.get(), 0, &kt, &vt));
    }
    // The last token's query: column n - 1 of the last batch's q [D, n, n_head].
    const int64_t last_batch = n_kv - (n_kv - 1) / kBatch * kBatch;
    const fst_tensor qt = flashstate::View::rows(flashstate::View::f32(q.data(), o.dim, last_batch, o.n_head),
                                                 last_batch - 1, 1);
    const fst_attn_params p =
        flashstate::Params().scale(float(1.0 / std::sqrt(double(o.dim)))).causal(n_kv - 1, 0).threads(o.threads);

    const auto flat = [&](const FlatBuffer &b) {
        return [&p, &qt, &b](Result &r) {
            flashstate::attn_with_state(p, qt, b.k_view, b.v_view, r.state_view, r.out_view);
        };
    };
    const auto cached = [&](const CachePtr &c) {
        return [&p, &qt, &c](Result &r) {
            check(fst_cache_attn(c.get(), &p, 0, &qt, nullptr, &r.state_view, &r.out_view));
        };
    };
    std::vector<SpeedCase> cases = {{"flat-f16", flat(f16), {}},
                                    {"flat-q8_0", flat(q8), {}},
                                    {"cache-f16", cached(cache_f16), {}},
                                    {"cache-f16+q8_0", cached(cache_mixed), {}}};
    std::vector<Result> results;
    for (size_t i = 0; i < cases.size(); ++i) results.emplace_back(o.dim, o.n_head, 1);
    constexpr int kWarmup = 2;
    for (int run = 0; run < kWarmup + o.runs; ++run)
        for (size_t i = 0; i < cases.size(); ++i) {
            const auto start = std::chrono::steady_clock::now();
            results[i].reset();
            cases[i].run(results[i]);
            if (run >= kWarmup) cases[i].ms.push_back(ms_since(start));
        }

    // Twins: cache-f16 holds flat-f16's rows; the mixed cache holds flat-f16's newest rows (as many as its hot tier
    // reports) and flat-q8_0's older ones, i.e. two segments of the flat buffers.
    std::vector<fst_cache_tier_stats> stats(3);
    check(fst_cache_stats(cache_mixed.get(), 0, stats.data(), 3));
    const int64_t hot = stats[0].n_tokens, cold = n_kv - hot;
    const fst_tensor k_cold = flashstate::View::rows(q8.k_view, 0, cold);
    const fst_tensor v_cold = flashstate::View::rows(q8.v_view, 0, cold);
    const fst_tensor k_hot = flashstate::View::rows(f16.k_view, cold, hot);
    const fst_tensor v_hot = flashstate::View::rows(f16.v_view, cold, hot);
    const fst_segment twin[2] = {{&k_cold, &v_cold, nullptr, 0, nullptr}, {&k_hot, &v_hot, nullptr, cold, nullptr}};
    Result mixed_twin(o.dim, o.n_head, 1);
    mixed_twin.reset();
    flashstate::attn_segments(p, qt, twin, 2, nullptr, mixed_twin.state_view, mixed_twin.out_view);
    const double err_f16 = rel_max_error(results[2].out, results[0].out);
    const double err_mixed = rel_max_error(results[3].out, mixed_twin.out);
    const bool ok = err_f16 <= 4e-6 && err_mixed <= 4e-6;
    const double base = median(cases[0].ms);
    for (SpeedCase &c : cases) {
        const double m = median(c.ms);
        std::printf("%8lld  %-15s %10.3f %10.3f %10.3f %8.2fx\n", (long long)n_kv, c.name, m,
                    *std::min_element(c.ms.begin(), c.ms.end()), *std::max_element(c.ms.begin(), c.ms.end()),
                    m / base);
    }
    std::printf("%8s  results vs the same stored values in flat buffers (bound 4e-6): cache-f16 %.2e, "
                "cache-f16+q8_0 %.2e %s\n", "", err_f16, err_mixed, ok ? "ok" : "FAILED");
    std::fflush(stdout);
    return ok;
}

} // namespace

int run_speed_study(const StudyOptions &o) {
    if (o.n_head % o.n_head_kv != 0 || o.dim % 32 != 0 || o.runs < 1) {
        std::fprintf(stderr, "flashstate cache-study: need --heads a multiple of --kv-heads, --dim a multiple of 32 "
                             "and --runs >= 1\n");
        return 2;
    }
    const unsigned hw = std::thread::hardware_concurrency();
    std::printf("flashstate %s cache-study --speed (isa %s, threads %d%s, load average %.2f at start)\n",
                flashstate::version().c_str(), fst_isa_name(fst_isa_best()), o.threads > 0 ? o.threads : int(hw),
                o.threads > 0 ? "" : " = all", load_average());
    std::printf("one decode step: %lld query heads, %lld KV heads, D %lld, causal, every token visible; "
                "median, min, max of %d interleaved runs in ms, ratio = median / median of flat-f16\n\n",
                (long long)o.n_head, (long long)o.n_head_kv, (long long)o.dim, o.runs);
    std::printf("%8s  %-15s %10s %10s %10s %9s\n", "n_kv", "case", "median", "min", "max", "ratio");
    bool ok = true;
    for (int64_t n_kv : o.speed_tokens) ok = measure_length(o, n_kv) && ok;
    std::printf("load average %.2f at the end\n", load_average());
    return ok ? 0 : 1;
}

} // namespace flashstate_tool
