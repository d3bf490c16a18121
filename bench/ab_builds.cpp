// flashstate_ab_builds: the same attention call through two or more builds of libflashstate.so, interleaved in one
// process, for A/B measurements on a machine whose speed drifts between minutes (docs/PERFORMANCE.md, session 10).
//
// Each build is loaded with dlopen(RTLD_LOCAL), so it keeps its own symbols, thread pool and scratch. Every round
// times one call through each build, in an order rotated per round, on a copy of the cache that no other recent
// call touched (copies together at least --buffer-mib), after a 2 ms pause so that the other builds' pools have
// stopped spinning. The result is the median of the per-round time ratios to the first build, and how many rounds
// each build won: both builds see the same phase of the machine, which separate processes minutes apart do not.
//
// usage: flashstate_ab_builds [options] first.so second.so [more.so ...]
#include <flashstate/flashstate.h>

#include <dlfcn.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

// The entry points the benchmark calls, from one build.
struct Build {
    std::string path;
    decltype(&fst_tensor_contiguous) tensor = nullptr;
    decltype(&fst_attn_default_params) default_params = nullptr;
    decltype(&fst_state_init) state_init = nullptr;
    decltype(&fst_attn_with_state) attn = nullptr;
    decltype(&fst_attn_segments) attn_segments = nullptr;
    decltype(&fst_attn_paged) attn_paged = nullptr; // with --paged only (older builds lack it)
    decltype(&fst_last_error) last_error = nullptr;
    std::vector<double> ms;
    std::vector<float> out;
};

template <class F> void load_symbol(void *lib, const char *name, F &f, const std::string &path) {
    f = reinterpret_cast<F>(dlsym(lib, name));
    if (f == nullptr) {
        std::fprintf(stderr, "%s: no symbol %s\n", path.c_str(), name);
        std::exit(2);
    }
}

Build load(const std::string &path, bool paged) {
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        std::fprintf(stderr, "%s\n", dlerror());
        std::exit(2);
    }
    Build b;
    b.path = path;
    load_symbol(lib, "fst_tensor_contiguous", b.tensor, path);
    load_symbol(lib, "fst_attn_default_params", b.default_params, path);
    load_symbol(lib, "fst_state_init", b.state_init, path);
    load_symbol(lib, "fst_attn_with_state", b.attn, path);
    load_symbol(lib, "fst_attn_segments", b.attn_segments, path);
    load_symbol(lib, "fst_last_error", b.last_error, path);
    if (paged) load_symbol(lib, "fst_attn_paged", b.attn_paged, path);
    return b;
}

// -n in F16 (n >= 0; truncated past 2048, where F16 stops holding every integer: the same value for every build).
uint16_t f16_of_negative_integer(int64_t n) {
    if (n == 0) return 0x8000;
    int e = 0;
    while ((int64_t(1) << (e + 1)) <= n) ++e;
    const uint32_t mantissa = uint32_t(e >= 10 ? (n >> (e - 10)) : (n << (10 - e))) & 0x3FFu;
    return uint16_t(0x8000u | (uint32_t(e + 15) << 10) | mantissa);
}

struct Options {
    fst_type type = FST_TYPE_F16;
    int64_t n_kv = 32768, n_q = 1, segments = 1, buffer_mib = 2048;
    int64_t n_head = 32, n_head_kv = 8; // --heads
    int64_t page_keys = 0; // --paged
    bool pages_in_order = false, first_contiguous = false;
    bool multiseg = false, mask = false, alibi = false;
    int64_t mask_every = 1;
    float softcap = 0.0f;
    int threads = 0, rounds = 21;
    std::vector<std::string> builds;
};

[[noreturn]] void usage(int code) {
    std::printf(
        "usage: flashstate_ab_builds [options] first.so second.so [more.so ...]\n\n"
        "Times one attention call (32 query heads, 8 KV heads unless --heads, D = DV = 128) through each build per\n"
        "round, the builds in an order rotated per round, and prints per build: the median time, the median and\n"
        "quartiles of its per-round time ratio to the first build, the rounds it was faster than the first, and the\n"
        "largest difference of its output from the first build's (relative to the output's largest magnitude).\n\n"
        "  --type T        K/V type: f16, q8_0 or q4_0 [f16]\n"
        "  --n-kv N        keys [32768]\n"
        "  --n-q N         query positions per head [1]\n"
        "  --heads H/HKV   query heads and KV heads (H a multiple of HKV; 32/32: no GQA, 64/8: 8 heads per KV head) [32/8]\n"
        "  --segments S    the keys in S equal segments, one fst_attn_with_state call each [1]\n"
        "  --multiseg      the S segments in one fst_attn_segments call instead\n"
        "  --paged P       the keys in pages of P keys placed in a random order, one fst_attn_paged call\n"
        "  --pages-in-order  with --paged: page i holds keys [i P, (i + 1) P) (the memory of a contiguous cache)\n"
        "  --first-contiguous  with --paged: the first build makes the contiguous call over the same copy instead\n"
        "                  (the paged call's cost over the contiguous one; outputs differ when pages are shuffled)\n"
        "  --mask          an F16 causal mask tensor (query positions at the end of the keys)\n"
        "  --softcap C     fst_attn_params.softcap (logit softcapping, as Gemma 2's 50) [0: off]\n"
        "  --mask-every N  the causal mask also hides every key j with j %% N != 0 (as other sequences' cells of a\n"
        "                  KV cache shared by N sequences) [1]\n"
        "  --alibi         ALiBi as llama.cpp gives it: the causal mask holds -(query position - key position) where\n"
        "                  visible, and max_bias is 8\n"
        "  --threads N     fst_attn_params.n_threads (0: the library's default) [0]\n"
        "  --rounds R      rounds [21]\n"
        "  --buffer-mib M  cache copies together at least M MiB, so no call finds its K/V in the cache [2048]\n");
    std::exit(code);
}

Options parse(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char * {
            if (i + 1 >= argc) usage(2);
            return argv[++i];
        };
        if (a == "-h" || a == "--help") usage(0);
        else if (a == "--type") {
            const std::string t = value();
            o.type = t == "f16" ? FST_TYPE_F16 : t == "q8_0" ? FST_TYPE_Q8_0 : t == "q4_0" ? FST_TYPE_Q4_0 : (usage(2), FST_TYPE_F16);
        } else if (a == "--n-kv") o.n_kv = std::atoll(value());
        else if (a == "--n-q") o.n_q = std::atoll(value());
        else if (a == "--heads") {
            const char *v = value(), *slash = std::strchr(v, '/');
            o.n_head = std::atoll(v);
            o.n_head_kv = slash ? std::atoll(slash + 1) : 0;
            if (o.n_head <= 0 || o.n_head_kv <= 0 || o.n_head % o.n_head_kv != 0) usage(2);
        }
        else if (a == "--segments") o.segments = std::atoll(value());
        else if (a == "--multiseg") o.multiseg = true;
        else if (a == "--paged") o.page_keys = std::atoll(value());
        else if (a == "--pages-in-order") o.pages_in_order = true;
        else if (a == "--first-contiguous") o.first_contiguous = true;
        else if (a == "--mask") o.mask = true;
        else if (a == "--alibi") o.mask = o.alibi = true;
        else if (a == "--mask-every") o.mask = true, o.mask_every = std::max<int64_t>(1, std::atoll(value()));
        else if (a == "--softcap") o.softcap = float(std::atof(value()));
        else if (a == "--threads") o.threads = std::atoi(value());
        else if (a == "--rounds") o.rounds = std::atoi(value());
        else if (a == "--buffer-mib") o.buffer_mib = std::atoll(value());
        else if (!a.empty() && a[0] == '-') usage(2);
        else o.builds.push_back(a);
    }
    if (o.builds.size() < 2 || o.n_kv < 1 || o.n_q < 1 || o.segments < 1 || o.n_kv % o.segments != 0 || o.rounds < 1 ||
        o.page_keys < 0 || (o.page_keys > 0 && (o.n_kv % o.page_keys != 0 || o.segments != 1)))
        usage(2);
    return o;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
    const Options o = parse(argc, argv);
    constexpr int64_t D = 128;
    const int64_t H = o.n_head, HKV = o.n_head_kv;
    std::vector<Build> builds;
    for (const std::string &path : o.builds) builds.push_back(load(path, o.page_keys > 0));

    // K and V: random rows; quantized blocks get a small scale, so that logits stay moderate.
    const int64_t block = o.type == FST_TYPE_F16 ? 0 : o.type == FST_TYPE_Q8_0 ? 34 : 18;
    const size_t row_bytes = block == 0 ? size_t(2 * D) : size_t(D / 32 * block);
    const size_t copy_bytes = row_bytes * size_t(o.n_kv * HKV);
    const int copies = int(std::clamp<int64_t>(int64_t((size_t(o.buffer_mib) << 20) / (2 * copy_bytes)) + 1, 2, 256));
    const size_t total = copy_bytes * size_t(copies);
    auto *k = static_cast<unsigned char *>(std::aligned_alloc(size_t(1) << 21, (total + (size_t(1) << 21) - 1) & ~((size_t(1) << 21) - 1)));
    auto *v = static_cast<unsigned char *>(std::aligned_alloc(size_t(1) << 21, (total + (size_t(1) << 21) - 1) & ~((size_t(1) << 21) - 1)));
    if (k == nullptr || v == nullptr) {
        std::fprintf(stderr, "cannot allocate 2 x %zu bytes\n", total);
        return 2;
    }
    madvise(k, total, MADV_HUGEPAGE);
    madvise(v, total, MADV_HUGEPAGE);
    // One copy filled, the others the same bytes (so that every build's output can be compared with the first's).
    uint64_t x = 1; // a 64-bit LCG
    for (size_t i = 0; i + 1 < copy_bytes; i += 2) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        const uint16_t a = uint16_t(0x3000 + ((x >> 33) & 0xFFF)), b = uint16_t(0x3000 + ((x >> 45) & 0xFFF)); // F16 in [0.125, 1)
        std::memcpy(k + i, &a, 2);
        std::memcpy(v + i, &b, 2);
    }
    if (block != 0)
        for (size_t i = 0; i < copy_bytes; i += size_t(block)) {
            const uint16_t scale = 0x2000; // F16 2^-7
            std::memcpy(k + i, &scale, 2);
            std::memcpy(v + i, &scale, 2);
        }
    for (int c = 1; c < copies; ++c) {
        std::memcpy(k + size_t(c) * copy_bytes, k, copy_bytes);
        std::memcpy(v + size_t(c) * copy_bytes, v, copy_bytes);
    }
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    std::vector<float> q(size_t(D * H * o.n_q));
    for (float &x : q) x = normal(rng);
    std::vector<uint16_t> mask(size_t(o.n_kv * o.n_q));
    for (int64_t r = 0; r < o.n_q; ++r)
        for (int64_t j = 0; j < o.n_kv; ++j) {
            const int64_t distance = o.n_kv - o.n_q + r - j;
            mask[size_t(r * o.n_kv + j)] = distance < 0 || j % o.mask_every != 0 ? 0xFC00
                                           : o.alibi                             ? f16_of_negative_integer(distance)
                                                                                 : 0;
        }

    const int64_t len = o.n_kv / o.segments;
    // --paged: page i of every head is rows [table[i] * P, (table[i] + 1) * P) of the copy.
    const int64_t n_pages = o.page_keys > 0 ? o.n_kv / o.page_keys : 0;
    std::vector<int32_t> table(static_cast<size_t>(n_pages));
    for (int64_t i = 0; i < n_pages; ++i) table[size_t(i)] = int32_t(i);
    if (!o.pages_in_order) std::shuffle(table.begin(), table.end(), std::mt19937(5));
    std::vector<float> state(size_t(2 * H * o.n_q));
    int next_copy = 0;
    auto run = [&](Build &b) {
        const unsigned char *kc = k + size_t(next_copy) * copy_bytes, *vc = v + size_t(next_copy) * copy_bytes;
        next_copy = (next_copy + 1) % copies;
        b.out.assign(size_t(D * H * o.n_q), 0.0f);
        fst_tensor tq = b.tensor(FST_TYPE_F32, D, o.n_q, H, 1, q.data());
        fst_tensor ts = b.tensor(FST_TYPE_F32, 2, H, o.n_q, 1, state.data());
        fst_tensor to = b.tensor(FST_TYPE_F32, D, H, o.n_q, 1, b.out.data());
        fst_attn_params p = b.default_params();
        p.scale = 1.0f / std::sqrt(float(D));
        p.n_threads = o.threads;
        p.softcap = o.softcap;
        p.max_bias = o.alibi ? 8.0f : 0.0f;
        std::vector<fst_tensor> tk(size_t(o.segments)), tv(size_t(o.segments)), tm(size_t(o.segments));
        std::vector<fst_segment> segs(size_t(o.segments));
        for (int64_t s = 0; s < o.segments; ++s) { // segment s: keys [s * len, (s + 1) * len) of every head
            tk[size_t(s)] = b.tensor(o.type, D, o.n_kv, HKV, 1, const_cast<unsigned char *>(kc));
            tv[size_t(s)] = b.tensor(o.type, D, o.n_kv, HKV, 1, const_cast<unsigned char *>(vc));
            tm[size_t(s)] = b.tensor(FST_TYPE_F16, o.n_kv, o.n_q, 1, 1, mask.data());
            for (fst_tensor *t : {&tk[size_t(s)], &tv[size_t(s)]}) {
                t->ne[1] = len;
                t->data = static_cast<unsigned char *>(t->data) + size_t(s * len) * row_bytes;
            }
            tm[size_t(s)].ne[0] = len;
            tm[size_t(s)].data = mask.data() + s * len;
            segs[size_t(s)] = fst_segment{&tk[size_t(s)], &tv[size_t(s)], o.mask ? &tm[size_t(s)] : nullptr, s * len, nullptr};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        const auto t0 = std::chrono::steady_clock::now();
        fst_status st = b.state_init(&ts, &to);
        if (o.page_keys > 0 && !(o.first_contiguous && &b == &builds[0])) {
            fst_tensor pages[2] = {tk[0], tv[0]};
            for (fst_tensor &t : pages) {
                t.ne[1] = o.page_keys;
                t.ne[3] = n_pages;
                t.nb[3] = size_t(o.page_keys) * t.nb[1];
            }
            fst_tensor tt = b.tensor(FST_TYPE_I32, n_pages, 1, 1, 1, table.data());
            const fst_paged_kv kv{&pages[0], &pages[1], &tt, o.n_kv};
            st = st != FST_OK ? st : b.attn_paged(&p, &tq, &kv, o.mask ? &tm[0] : nullptr, nullptr, &ts, &to);
        } else if (o.page_keys > 0) { // --first-contiguous: the same copy's keys as one contiguous call
            st = st != FST_OK ? st : b.attn(&p, &tq, &tk[0], &tv[0], o.mask ? &tm[0] : nullptr, nullptr, &ts, &to);
        } else if (o.multiseg) st = st != FST_OK ? st : b.attn_segments(&p, &tq, segs.data(), o.segments, nullptr, &ts, &to);
        else
            for (int64_t s = 0; s < o.segments && st == FST_OK; ++s)
                st = b.attn(&p, &tq, &tk[size_t(s)], &tv[size_t(s)], segs[size_t(s)].mask, nullptr, &ts, &to);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (st != FST_OK) {
            std::fprintf(stderr, "%s: %s\n", b.path.c_str(), b.last_error());
            std::exit(1);
        }
        b.ms.push_back(ms);
    };

    const size_t n = builds.size();
    for (int r = 0; r < o.rounds; ++r)
        for (size_t i = 0; i < n; ++i) run(builds[(size_t(r) + i) % n]);

    if (o.page_keys > 0) std::printf("pages of %lld keys in a random order, one fst_attn_paged call; ", (long long)o.page_keys);
    std::printf("%s K/V, heads %lld/%lld, n_kv %lld, n_q %lld, %lld segment(s)%s%s%s, threads %d, %d rounds, %d copies of %.1f MiB\n",
                o.type == FST_TYPE_F16 ? "f16" : o.type == FST_TYPE_Q8_0 ? "q8_0" : "q4_0", (long long)H, (long long)HKV,
                (long long)o.n_kv, (long long)o.n_q, (long long)o.segments,
                o.multiseg ? " in one fst_attn_segments call" : "", o.alibi ? ", ALiBi causal mask tensor" : o.mask ? ", causal mask tensor" : "",
                o.softcap > 0.0f ? ", softcap" : "", o.threads,
                o.rounds, copies, double(copy_bytes) / 1048576.0);
    float scale = 0.0f;
    for (float x : builds[0].out) scale = std::max(scale, std::fabs(x));
    for (const Build &b : builds) {
        std::vector<double> ratio;
        int faster = 0;
        for (int r = 0; r < o.rounds; ++r) {
            ratio.push_back(b.ms[size_t(r)] / builds[0].ms[size_t(r)]);
            faster += b.ms[size_t(r)] < builds[0].ms[size_t(r)];
        }
        std::sort(ratio.begin(), ratio.end());
        float diff = 0.0f;
        for (size_t i = 0; i < b.out.size(); ++i) diff = std::max(diff, std::fabs(b.out[i] - builds[0].out[i]));
        std::printf("%-40s median %8.3f ms   ratio to first: median %.3f (quartiles %.3f %.3f), faster in %d/%d; "
                    "output differs by %.1e\n",
                    b.path.c_str(), median(b.ms), ratio[ratio.size() / 2], ratio[ratio.size() / 4], ratio[3 * ratio.size() / 4],
                    faster, o.rounds, scale > 0.0f ? diff / scale : diff);
    }
    std::free(k);
    std::free(v);
    return 0;
}
