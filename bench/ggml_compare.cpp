// ggml_compare: ggml's CPU flash_attn_ext and flashstate timed side by side in one run, on the same data, so that
// the speed-ups of issue 4 are ratios measured together (docs/PERFORMANCE.md, "Same-run comparison with ggml").
// Built only with FLASHSTATE_GGML_DIR. Exit code 1 when a result is wrong, 2 on bad options.
#include <flashstate/flashstate.h>
#include <ggml-cpu.h>
#include <ggml.h>

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

// The shape of issue 4: 32 query heads over 8 KV heads, D = DV = 128.
constexpr int64_t D = 128, N_HEAD = 32, N_HEAD_KV = 8;
constexpr int64_t MiB = int64_t(1) << 20;
// Result checks. flashstate: SPEC section 4's bound. ggml rounds Q to K's type and, for F16 V, accumulates the
// output in F16, an error that grows with n_kv (0.14 at 128k keys on one thread here); its bound only catches a
// harness mistake (layout, head mapping, wrong copy), which gives errors of order 1.
constexpr double GGML_BOUND = 0.5, FST_BOUND = 1e-5;

struct Case {
    std::string name;
    fst_type type;
    int64_t n_kv, n_q;  // n_q > 1: causal, query row r at position n_kv - n_q + r
    bool fst_mask_tensor; // flashstate reads ggml's F16 causal mask instead of its virtual causal mask
};

struct Options {
    std::vector<std::string> filters;
    std::vector<int> threads{1, 2};
    int runs = 9;
    bool quick = false;
};

// K/V memory on 2 MiB boundaries, asked for transparent huge pages; freed with free().
void *alloc_kv(size_t bytes) {
    const size_t align = 2 * MiB, rounded = (bytes + align - 1) / align * align;
    void *p = std::aligned_alloc(align, rounded);
    if (p == nullptr) {
        std::fprintf(stderr, "out of memory allocating %zu MiB\n", rounded / MiB);
        std::exit(1);
    }
    madvise(p, rounded, MADV_HUGEPAGE);
    return p;
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

double load_average() {
    double load[1] = {-1};
    getloadavg(load, 1);
    return load[0];
}

// CPU seconds: busy time of the whole machine (/proc/stat, every CPU, stolen time included) and of this process.
struct CpuTimes {
    double machine = 0, self = 0;
    static CpuTimes now() {
        CpuTimes t;
        std::ifstream in("/proc/stat");
        std::string cpu;
        double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
        in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
        t.machine = (user + nice + system + irq + softirq + steal) / double(sysconf(_SC_CLK_TCK));
        rusage usage{};
        getrusage(RUSAGE_SELF, &usage);
        t.self = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
        return t;
    }
};

void require(fst_status status, const char *what) {
    if (status != FST_OK) {
        std::fprintf(stderr, "%s: %s\n", what, fst_last_error());
        std::exit(1);
    }
}

// copies of one case's K and V, each [D, n_kv, N_HEAD_KV] contiguous, K then V, filled with random rows drawn
// from a pool of N(0,1) rows stored with fst_quantize_row (filling a GiB row by row from a pool is fast, quantizing
// every element is not).
struct KvCopies {
    int64_t copies = 0;
    size_t tensor_bytes = 0; // one of K or V
    char *data = nullptr;
    KvCopies(fst_type type, int64_t n_kv, int64_t n_copies, std::mt19937_64 &rng) : copies(n_copies) {
        const size_t row = fst_type_size(type) * D / fst_type_block_size(type);
        tensor_bytes = row * n_kv * N_HEAD_KV;
        data = static_cast<char *>(alloc_kv(tensor_bytes * 2 * copies));
        const int64_t pool_rows = 4096;
        std::vector<char> pool(row * pool_rows);
        std::normal_distribution<float> normal;
        std::vector<float> values(D);
        for (int64_t r = 0; r < pool_rows; ++r) {
            for (float &x : values) x = normal(rng);
            require(fst_quantize_row(type, values.data(), pool.data() + r * row, D), "fst_quantize_row");
        }
        for (size_t offset = 0; offset < tensor_bytes * 2 * copies; offset += row)
            std::memcpy(data + offset, pool.data() + (rng() % pool_rows) * row, row);
    }
    ~KvCopies() { std::free(data); }
    KvCopies(const KvCopies &) = delete;
    KvCopies &operator=(const KvCopies &) = delete;
    char *k(int64_t copy) const { return data + copy * 2 * tensor_bytes; }
    char *v(int64_t copy) const { return k(copy) + tensor_bytes; }
};

bool visible(const Case &c, int64_t r, int64_t j) { return c.n_q == 1 || j <= c.n_kv - c.n_q + r; }

// max |out - ref| / max |ref| over the checked (row, head) pairs, the reference in double over the stored values.
double reference_error(const Case &c, const float *q, const char *k, const char *v, const float *out) {
    const size_t row = fst_type_size(c.type) * D / fst_type_block_size(c.type);
    std::vector<float> kf(c.n_kv * D), vf(c.n_kv * D);
    std::vector<double> logits(c.n_kv), ref(D);
    double diff = 0, norm = 0;
    const int64_t heads[] = {0, 13, 31};
    const int64_t rows[] = {0, c.n_q / 2, c.n_q - 1};
    for (int64_t h : heads) {
        const int64_t hk = h / (N_HEAD / N_HEAD_KV);
        for (int64_t j = 0; j < c.n_kv; ++j) {
            require(fst_dequantize_row(c.type, k + (hk * c.n_kv + j) * row, &kf[j * D], D), "fst_dequantize_row");
            require(fst_dequantize_row(c.type, v + (hk * c.n_kv + j) * row, &vf[j * D], D), "fst_dequantize_row");
        }
        for (int64_t r : rows) {
            const float *qr = q + (h * c.n_q + r) * D; // q [D, n_q, N_HEAD]
            double max = -INFINITY, sum = 0;
            for (int64_t j = 0; j < c.n_kv; ++j) {
                double dot = 0;
                for (int64_t i = 0; i < D; ++i) dot += double(qr[i]) * kf[j * D + i];
                logits[j] = visible(c, r, j) ? dot / std::sqrt(double(D)) : -INFINITY;
                max = std::max(max, logits[j]);
            }
            std::fill(ref.begin(), ref.end(), 0.0);
            for (int64_t j = 0; j < c.n_kv; ++j) {
                if (logits[j] == -INFINITY) continue;
                const double w = std::exp(logits[j] - max);
                sum += w;
                for (int64_t i = 0; i < D; ++i) ref[i] += w * vf[j * D + i];
            }
            const float *o = out + (r * N_HEAD + h) * D; // out [DV, N_HEAD, n_q]
            for (int64_t i = 0; i < D; ++i) {
                diff = std::max(diff, std::abs(o[i] - ref[i] / sum));
                norm = std::max(norm, std::abs(ref[i] / sum));
            }
        }
    }
    return diff / std::max(norm, 1e-30);
}

// max |a - b| / max |b| over every element.
double relative_difference(const std::vector<float> &a, const std::vector<float> &b) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, std::abs(double(a[i]) - b[i]));
        norm = std::max(norm, std::abs(double(b[i])));
    }
    return diff / std::max(norm, 1e-30);
}

// ggml's side of one case: one graph (q, k, v, mask -> flash_attn_ext, F32 precision) built once; a run points
// k and v at the copy it reads (they are made in a context without memory). One persistent ggml thread pool per
// thread count, as an engine keeps one; paused between blocks of runs so that its polling workers do not take a
// core from flashstate's runs.
struct GgmlSide {
    ggml_context *ctx = nullptr, *kv_ctx = nullptr;
    ggml_tensor *k = nullptr, *v = nullptr, *mask = nullptr, *out = nullptr;
    ggml_cgraph *graph = nullptr;
    GgmlSide(const Case &c, const std::vector<float> &q_data) {
        const size_t bytes = q_data.size() * sizeof(float) + size_t(c.n_kv) * c.n_q * 2 + D * N_HEAD * c.n_q * 4;
        ctx = ggml_init({bytes + 16 * ggml_tensor_overhead() + ggml_graph_overhead() + MiB, nullptr, false});
        kv_ctx = ggml_init({4 * ggml_tensor_overhead(), nullptr, true});
        ggml_tensor *q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, c.n_q, N_HEAD, 1);
        std::memcpy(q->data, q_data.data(), ggml_nbytes(q));
        k = ggml_new_tensor_4d(kv_ctx, ggml_type(c.type), D, c.n_kv, N_HEAD_KV, 1);
        v = ggml_new_tensor_4d(kv_ctx, ggml_type(c.type), D, c.n_kv, N_HEAD_KV, 1);
        // ggml has no virtual mask: causal needs an F16 [n_kv, n_q] tensor.
        if (c.n_q > 1) {
            mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, c.n_kv, c.n_q, 1, 1);
            auto *m = static_cast<ggml_fp16_t *>(mask->data);
            for (int64_t r = 0; r < c.n_q; ++r)
                for (int64_t j = 0; j < c.n_kv; ++j)
                    m[r * c.n_kv + j] = ggml_fp32_to_fp16(visible(c, r, j) ? 0.0f : -INFINITY);
        }
        out = ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0f / std::sqrt(float(D)), 0.0f, 0.0f);
        ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32);
        graph = ggml_new_graph(ctx);
        ggml_build_forward_expand(graph, out);
    }
    ~GgmlSide() {
        ggml_free(kv_ctx);
        ggml_free(ctx);
    }
    GgmlSide(const GgmlSide &) = delete;
    GgmlSide &operator=(const GgmlSide &) = delete;
    const float *result() const { return static_cast<const float *>(out->data); }
};

struct GgmlPool {
    int n_threads;
    ggml_threadpool *pool = nullptr;
    std::vector<uint8_t> work;
    explicit GgmlPool(int threads) : n_threads(threads) {
        ggml_threadpool_params params = ggml_threadpool_params_default(n_threads);
        pool = ggml_threadpool_new(&params);
    }
    ~GgmlPool() { ggml_threadpool_free(pool); }
    GgmlPool(const GgmlPool &) = delete;
    GgmlPool &operator=(const GgmlPool &) = delete;
    void compute(GgmlSide &side, const KvCopies &kv, int64_t copy) {
        side.k->data = kv.k(copy);
        side.v->data = kv.v(copy);
        ggml_cplan plan = ggml_graph_plan(side.graph, n_threads, pool);
        if (work.size() < plan.work_size) work.resize(plan.work_size);
        plan.work_data = work.data();
        if (ggml_graph_compute(side.graph, &plan) != GGML_STATUS_SUCCESS) {
            std::fprintf(stderr, "ggml_graph_compute failed\n");
            std::exit(1);
        }
    }
};

// flashstate's side: one fst_attn_with_state call from the empty state; the causal mask virtual (by position), or
// ggml's mask tensor.
struct FstSide {
    const Case &c;
    fst_tensor q, state, out, mask{};
    std::vector<float> state_data, out_data;
    FstSide(const Case &cs, std::vector<float> &q_data, const GgmlSide &ggml) : c(cs) {
        if (c.fst_mask_tensor) mask = fst_tensor_contiguous(FST_TYPE_F16, c.n_kv, c.n_q, 1, 1, ggml.mask->data);
        state_data.resize(2 * N_HEAD * c.n_q);
        out_data.resize(D * N_HEAD * c.n_q);
        q = fst_tensor_contiguous(FST_TYPE_F32, D, c.n_q, N_HEAD, 1, q_data.data());
        state = fst_tensor_contiguous(FST_TYPE_F32, 2, N_HEAD, c.n_q, 1, state_data.data());
        out = fst_tensor_contiguous(FST_TYPE_F32, D, N_HEAD, c.n_q, 1, out_data.data());
    }
    void run(const KvCopies &kv, int64_t copy, int n_threads) {
        fst_attn_params p = fst_attn_default_params();
        p.scale = 1.0f / std::sqrt(float(D));
        p.n_threads = n_threads;
        if (c.n_q > 1 && !c.fst_mask_tensor) {
            p.virtual_mask = FST_MASK_CAUSAL;
            p.q_pos0 = c.n_kv - c.n_q;
        }
        fst_tensor k = fst_tensor_contiguous(c.type, D, c.n_kv, N_HEAD_KV, 1, kv.k(copy));
        fst_tensor v = fst_tensor_contiguous(c.type, D, c.n_kv, N_HEAD_KV, 1, kv.v(copy));
        require(fst_state_init(&state, &out), "fst_state_init");
        require(fst_attn_with_state(&p, &q, &k, &v, c.fst_mask_tensor ? &mask : nullptr, nullptr, &state, &out), "fst_attn_with_state");
    }
};

// "4k" for 4096, "256" for 256.
std::string kv_label(int64_t n_kv) { return n_kv % 1024 == 0 ? std::to_string(n_kv / 1024) + "k" : std::to_string(n_kv); }

std::vector<Case> all_cases(bool quick) {
    std::vector<Case> cases;
    const std::pair<fst_type, const char *> types[] = {
        {FST_TYPE_F16, "f16"}, {FST_TYPE_Q8_0, "q8_0"}, {FST_TYPE_Q4_0, "q4_0"}};
    const int64_t sizes[] = {quick ? 256 : 4096, quick ? 1024 : 32768, quick ? 2048 : 131072};
    for (auto [type, name] : types)
        for (int64_t n_kv : sizes)
            cases.push_back({std::string("decode-") + name + "-" + kv_label(n_kv), type, n_kv, 1, false});
    const int64_t n_kv = quick ? 1024 : 4096, n_q = quick ? 64 : 512;
    const std::string prefill = "prefill-f16-" + kv_label(n_kv) + "-q" + std::to_string(n_q);
    cases.push_back({prefill, FST_TYPE_F16, n_kv, n_q, false});
    cases.push_back({prefill + "-mask", FST_TYPE_F16, n_kv, n_q, true});
    return cases;
}

bool selected(const Options &o, const std::string &name) {
    if (o.filters.empty()) return true;
    return std::any_of(o.filters.begin(), o.filters.end(),
                       [&](const std::string &f) { return name.find(f) != std::string::npos; });
}

std::vector<std::string> split(const std::string &list) {
    std::vector<std::string> items;
    std::stringstream in(list);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty()) items.push_back(item);
    return items;
}

int usage(const char *message) {
    std::fprintf(stderr,
                 "%s\nusage: flashstate_ggml_compare [--case LIST] [--runs N] [--threads LIST] [--quick]\n"
                 "  --case LIST     only cases whose name contains one of the comma-separated strings\n"
                 "  --runs N        timed runs per case and thread count, median reported (default 9, 3 with --quick)\n"
                 "  --threads LIST  thread counts (default 1,2)\n"
                 "  --quick         small sizes: a smoke test of both paths and the checks (timings meaningless)\n",
                 message);
    return 2;
}

} // namespace

int main(int argc, char **argv) {
    Options o;
    int runs = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--quick") o.quick = true;
        else if (arg == "--case" && has_value) o.filters = split(argv[++i]);
        else if (arg == "--runs" && has_value) runs = std::atoi(argv[++i]);
        else if (arg == "--threads" && has_value) {
            o.threads.clear();
            for (const std::string &t : split(argv[++i])) o.threads.push_back(std::atoi(t.c_str()));
        } else return usage(("unknown or incomplete option " + arg).c_str());
    }
    o.runs = runs > 0 ? runs : o.quick ? 3 : 9;
    if (o.threads.empty() || std::any_of(o.threads.begin(), o.threads.end(), [](int t) { return t < 1; }))
        return usage("--threads needs positive thread counts");
    // The rotated copies of a case total at least this much (the VM's L3 behaves like ~100-128 MiB), at least 2.
    const int64_t rotation_bytes = (o.quick ? 16 : 1024) * MiB;

    ggml_cpu_init();
    std::printf("ggml flash_attn_ext (CPU, GGML_PREC_F32) vs flashstate %s fst_attn_with_state, same run, same data\n",
                fst_version());
    std::printf("cpu: %s, %ld hardware threads, L3 reported %ld MiB; flashstate kernel isa %s; load average %.2f\n",
                cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN), sysconf(_SC_LEVEL3_CACHE_SIZE) / MiB,
                fst_isa_name(fst_isa_best()), load_average());
    std::printf("shape: %lld query heads, %lld KV heads, D = DV = %lld, scale 1/sqrt(D), q, K, V ~ N(0,1); "
                "median of %d runs; per case and thread count a block of ggml runs then a block of flashstate runs, each after one untimed run, one rotation over the K/V copies\n",
                (long long)N_HEAD, (long long)N_HEAD_KV, (long long)D, o.runs);
    std::printf("err: max |out - ref| / max |ref| against a double reference (heads 0, 13, 31; rows first, middle, "
                "last); diff: max |ggml - fst| / max |fst| over the whole output\n\n");
    std::printf("%-24s %3s %7s %6s %9s %9s %9s %8s %9s %8s %8s %9s %9s %9s %5s\n", "case", "thr", "KV MiB",
                "copies", "ggml ms", "fst ms", "ggml GB/s", "fst GB/s", "ggml GF/s", "fst GF/s", "ggml/fst",
                "ggml err", "fst err", "diff", "check");

    const CpuTimes start = CpuTimes::now();
    const double start_ms = now_ms();
    std::vector<std::unique_ptr<GgmlPool>> pools;
    for (int t : o.threads) pools.push_back(std::make_unique<GgmlPool>(t));
    std::mt19937_64 rng(42);
    bool all_ok = true;
    for (const Case &c : all_cases(o.quick)) {
        if (!selected(o, c.name)) continue;
        std::vector<float> q_data(D * c.n_q * N_HEAD);
        std::normal_distribution<float> normal;
        for (float &x : q_data) x = normal(rng);
        const size_t row = fst_type_size(c.type) * D / fst_type_block_size(c.type);
        const size_t kv_bytes = 2 * row * c.n_kv * N_HEAD_KV;
        const int64_t copies = std::max<int64_t>(2, (rotation_bytes + kv_bytes - 1) / kv_bytes);
        KvCopies kv(c.type, c.n_kv, copies, rng);
        GgmlSide ggml(c, q_data);
        FstSide fst(c, q_data, ggml);
        // Flops per visible (query row, query head, key): 2 D for QK, 2 DV for PV.
        int64_t pairs = 0;
        for (int64_t r = 0; r < c.n_q; ++r) pairs += c.n_q == 1 ? c.n_kv : c.n_kv - c.n_q + r + 1;
        const double flops = double(pairs) * N_HEAD * 4 * D;
        int64_t next = 0; // the rotation, shared by both sides: between two reads of a copy every other is read
        for (const auto &pool : pools) {
            // Untimed first runs on copy 0 (they also start both thread pools), checked.
            pool->compute(ggml, kv, 0);
            fst.run(kv, 0, pool->n_threads);
            const std::vector<float> ggml_out(ggml.result(), ggml.result() + fst.out_data.size());
            const double ggml_err = reference_error(c, q_data.data(), kv.k(0), kv.v(0), ggml_out.data());
            const double fst_err = reference_error(c, q_data.data(), kv.k(0), kv.v(0), fst.out_data.data());
            const double diff = relative_difference(ggml_out, fst.out_data);
            const bool ok = ggml_err <= GGML_BOUND && fst_err <= FST_BOUND && diff <= GGML_BOUND;
            all_ok = all_ok && ok;
            // A block of ggml runs, then a block of flashstate runs, each thread pool quiet during the other's. Each
            // block starts with an untimed run: it wakes that side's threads after the other side's block (a first
            // case once timed flashstate 3x slow without it).
            std::vector<double> ggml_ms, fst_ms;
            ggml_threadpool_pause(pool->pool);
            for (int i = -1; i < o.runs; ++i) {
                const double t0 = now_ms();
                pool->compute(ggml, kv, next++ % copies);
                if (i >= 0) ggml_ms.push_back(now_ms() - t0);
            }
            ggml_threadpool_pause(pool->pool);
            for (int i = -1; i < o.runs; ++i) {
                const double t0 = now_ms();
                fst.run(kv, next++ % copies, pool->n_threads);
                if (i >= 0) fst_ms.push_back(now_ms() - t0);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2)); // flashstate's workers spin up to 200 us
            const double g = median(ggml_ms), f = median(fst_ms);
            std::printf("%-24s %3d %7.1f %6lld %9.3f %9.3f %9.2f %8.2f %9.1f %8.1f %7.2fx %9.1e %9.1e %9.1e %5s\n",
                        c.name.c_str(), pool->n_threads, double(kv_bytes) / MiB, (long long)copies, g, f,
                        kv_bytes / g / 1e6, kv_bytes / f / 1e6, flops / g / 1e6, flops / f / 1e6, g / f, ggml_err,
                        fst_err, diff, ok ? "ok" : "FAIL");
            std::fflush(stdout);
        }
    }
    // Other processes on the cores show up in every number: say how much CPU time they took during the run.
    const CpuTimes end = CpuTimes::now();
    const double others = (end.machine - start.machine) - (end.self - start.self);
    const double capacity = (now_ms() - start_ms) / 1e3 * double(sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("\nother processes (and the hypervisor) used %.1f%% of the machine's CPU time during the run\n",
                100 * std::max(0.0, others) / capacity);
    std::printf("load average %.2f at the end%s\n", load_average(),
                all_ok ? "" : "; a result check FAILED (bounds: fst err 1e-5, ggml err and diff 0.5)");
    return all_ok ? 0 : 1;
}
