// `flashstate demo`: one decode/prefill step of a model-shaped layer over a KV cache kept in three storage tiers
// (oldest Q4_0, then Q8_0, newest F16), processed segment by segment with carried state. The result is checked
// against the same library over the whole range at once and against a double-precision softmax over the same
// stored values (SPEC section 4 bounds), and the cost of each form is timed.
#include "demo.h"

#include <flashstate/flashstate.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>
#include <vector>

namespace flashstate_tool {
namespace {

constexpr double kSegmentedVsUnsplitBound = 4e-6; // SPEC section 4: same kernel, different summation order
constexpr double kReferenceBound = 1e-5;          // SPEC section 4: against double precision, same stored inputs

// One storage tier: tokens [first, first + count) of every KV head, K and V stored as `type`,
// each a contiguous tensor [D, count, n_head_kv].
struct Tier {
    fst_type type = FST_TYPE_F32;
    int64_t first = 0, count = 0;
    std::vector<unsigned char> k, v;
    fst_tensor k_view{}, v_view{}; // point into k and v: a Tier may move (the buffers stay put) but not be copied

    Tier() = default;
    Tier(Tier &&) = default;
    Tier &operator=(Tier &&) = default;
};

// The problem in one place. Dense F32 K/V use the layout [D, n_kv, n_head_kv]: row (j, g) at (g * n_kv + j) * D.
struct Problem {
    DemoOptions o;
    float scale = 1.0f;
    int64_t q_pos0 = 0;             // query row r sits at position q_pos0 + r; key j at position j
    std::vector<float> q;           // [D, n_q, n_head]
    std::vector<float> k_original;  // the values before storage
    std::vector<float> v_original;
    std::vector<Tier> tiers;        // oldest first
    std::vector<float> k_stored;    // the stored rows, dequantized with fst_dequantize_row (exact)
    std::vector<float> v_stored;
};

// One result: state [2, n_head, n_q] and out [D, n_head, n_q], with views over them.
struct Result {
    std::vector<float> state, out;
    fst_tensor state_view{}, out_view{};
    Result(int64_t dim, int64_t n_head, int64_t n_q)
        : state(size_t(2 * n_head * n_q)), out(size_t(dim * n_head * n_q)) {
        state_view = flashstate::View::state(state.data(), n_head, n_q);
        out_view = flashstate::View::out(out.data(), dim, n_head, n_q);
    }
    Result(const Result &) = delete;
    Result &operator=(const Result &) = delete;
};

std::vector<float> normal_values(size_t n, std::mt19937_64 &rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> values(n);
    for (float &x : values) x = nd(rng);
    return values;
}

// Stores tokens [first, first + count) of the original K/V as `type`, and writes back what was stored
// (dequantized) into the problem's dense k_stored / v_stored.
Tier make_tier(Problem &p, fst_type type, int64_t first, int64_t count) {
    const int64_t D = p.o.dim, n_kv = p.o.n_kv, n_head_kv = p.o.n_head_kv;
    const size_t row = flashstate::row_bytes(type, D);
    Tier t;
    t.type = type;
    t.first = first;
    t.count = count;
    t.k.resize(row * size_t(count * n_head_kv));
    t.v.resize(row * size_t(count * n_head_kv));
    for (int64_t g = 0; g < n_head_kv; ++g)
        for (int64_t j = 0; j < count; ++j) {
            const size_t dense = size_t((g * n_kv + first + j) * D);
            unsigned char *k_row = t.k.data() + size_t(g * count + j) * row;
            unsigned char *v_row = t.v.data() + size_t(g * count + j) * row;
            flashstate::quantize_row(type, &p.k_original[dense], k_row, D);
            flashstate::quantize_row(type, &p.v_original[dense], v_row, D);
            flashstate::dequantize_row(type, k_row, &p.k_stored[dense], D);
            flashstate::dequantize_row(type, v_row, &p.v_stored[dense], D);
        }
    t.k_view = flashstate::View::contiguous(type, t.k.data(), D, count, n_head_kv);
    t.v_view = flashstate::View::contiguous(type, t.v.data(), D, count, n_head_kv);
    return t;
}

Problem make_problem(const DemoOptions &o) {
    Problem p;
    p.o = o;
    p.scale = float(1.0 / std::sqrt(double(o.dim)));
    p.q_pos0 = o.n_kv - o.n_q;
    std::mt19937_64 rng(o.seed);
    p.q = normal_values(size_t(o.dim * o.n_q * o.n_head), rng);
    p.k_original = normal_values(size_t(o.dim * o.n_kv * o.n_head_kv), rng);
    p.v_original = normal_values(size_t(o.dim * o.n_kv * o.n_head_kv), rng);
    p.k_stored.resize(p.k_original.size());
    p.v_stored.resize(p.v_original.size());
    const int64_t cold = o.n_kv - o.warm - o.hot;
    if (cold > 0) p.tiers.push_back(make_tier(p, FST_TYPE_Q4_0, 0, cold));
    if (o.warm > 0) p.tiers.push_back(make_tier(p, FST_TYPE_Q8_0, cold, o.warm));
    if (o.hot > 0) p.tiers.push_back(make_tier(p, FST_TYPE_F16, cold + o.warm, o.hot));
    return p;
}

int64_t segment_count(const Tier &t, int64_t segment) { return (t.count + segment - 1) / segment; }

// The segmented pass: the empty state, then every segment of every tier, oldest first, each call reading the
// state and output the previous one left. Each segment is a view of its tier with a smaller ne[1].
void run_segmented(const Problem &p, const flashstate::Params &base, const fst_tensor &q, Result &r) {
    flashstate::state_init(r.state_view, r.out_view);
    for (const Tier &t : p.tiers)
        for (int64_t j = 0; j < t.count; j += p.o.segment) {
            const int64_t n = std::min(p.o.segment, t.count - j);
            const fst_tensor k = flashstate::View::rows(t.k_view, j, n);
            const fst_tensor v = flashstate::View::rows(t.v_view, j, n);
            flashstate::Params params = base;
            params.kv_pos0(t.first + j); // the causal mask needs each segment's first token position
            flashstate::attn_with_state(params, q, k, v, r.state_view, r.out_view);
        }
}

// The unsplit pass: one call over a dense F32 K/V of the whole range.
void run_unsplit(const flashstate::Params &base, const fst_tensor &q, const fst_tensor &k, const fst_tensor &v,
                 Result &r) {
    flashstate::state_init(r.state_view, r.out_view);
    flashstate::Params params = base;
    params.kv_pos0(0);
    flashstate::attn_with_state(params, q, k, v, r.state_view, r.out_view);
}

// The double-precision reference for this demo, written out here so that the check does not rest on the
// library's kernels. It follows SPEC section 1 literally for one query row at a time: logits
// x_j = scale * dot(q, k_j) for the keys the causal mask leaves visible (j <= q_pos0 + r), then
// out = sum_j exp(x_j - max) v_j / sum_j exp(x_j - max), everything in double. K and V are the stored rows as
// dequantized by fst_dequantize_row (a conversion that is exact), so it measures the attention, not the storage.
// Returns out in the library's layout [D, n_head, n_q].
std::vector<double> double_attention_causal(const Problem &p, const std::vector<float> &k,
                                            const std::vector<float> &v) {
    const int64_t D = p.o.dim, n_kv = p.o.n_kv, n_head = p.o.n_head, n_q = p.o.n_q;
    const int64_t group = n_head / p.o.n_head_kv; // query heads per KV head
    std::vector<double> out(size_t(D * n_head * n_q), 0.0);
    std::vector<double> logits(static_cast<size_t>(n_kv));
    std::vector<double> acc(static_cast<size_t>(D));
    for (int64_t h = 0; h < n_head; ++h) {
        const int64_t g = h / group;
        for (int64_t r = 0; r < n_q; ++r) {
            const float *qr = &p.q[size_t((h * n_q + r) * D)];
            const int64_t visible = std::min(n_kv, p.q_pos0 + r + 1); // keys 0 .. q_pos0 + r
            double max_logit = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j < visible; ++j) {
                const float *kj = &k[size_t((g * n_kv + j) * D)];
                double dot = 0.0;
                for (int64_t c = 0; c < D; ++c) dot += double(qr[c]) * double(kj[c]);
                logits[size_t(j)] = double(p.scale) * dot;
                max_logit = std::max(max_logit, logits[size_t(j)]);
            }
            if (visible <= 0) continue; // nothing visible: the output stays zero
            std::fill(acc.begin(), acc.end(), 0.0);
            double sum = 0.0;
            for (int64_t j = 0; j < visible; ++j) {
                const double w = std::exp(logits[size_t(j)] - max_logit);
                const float *vj = &v[size_t((g * n_kv + j) * D)];
                sum += w;
                for (int64_t c = 0; c < D; ++c) acc[size_t(c)] += w * double(vj[c]);
            }
            double *o = &out[size_t((r * n_head + h) * D)];
            for (int64_t c = 0; c < D; ++c) o[c] = acc[size_t(c)] / sum;
        }
    }
    return out;
}

// SPEC section 4: max |out - ref| / max(1e-6, max |ref|). NaN anywhere makes the error NaN (and the check fail).
template <class Ref> double rel_error(const std::vector<float> &out, const std::vector<Ref> &ref) {
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
        const double d = std::fabs(double(out[i]) - double(ref[i]));
        if (std::isnan(d)) return std::numeric_limits<double>::quiet_NaN();
        max_diff = std::max(max_diff, d);
        max_ref = std::max(max_ref, std::fabs(double(ref[i])));
    }
    return max_diff / std::max(1e-6, max_ref);
}

template <class F> double median_ms(int runs, F &&pass) {
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        pass();
        const auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

const char *verdict(double error, double bound) { return error <= bound ? "ok" : "FAILED"; }

// Fills in the tier defaults and checks the options; prints the reason and returns false when they cannot work.
bool resolve(DemoOptions &o) {
    if (o.hot < 0) o.hot = o.n_kv / 4;
    if (o.warm < 0) o.warm = o.n_kv / 4;
    const char *problem = nullptr;
    if (o.n_head < 1 || o.n_head_kv < 1 || o.n_head % o.n_head_kv != 0)
        problem = "--heads must be a positive multiple of --kv-heads";
    else if (o.dim < 32 || o.dim % 32 != 0)
        problem = "--dim must be a positive multiple of 32 (the Q8_0/Q4_0 block)";
    else if (o.n_kv < 1 || o.n_q < 1 || o.n_q > o.n_kv)
        problem = "--n-kv and --n-q must be positive, with --n-q <= --n-kv";
    else if (o.segment < 1)
        problem = "--segment must be positive";
    else if (o.hot + o.warm > o.n_kv)
        problem = "--hot + --warm must not exceed --n-kv";
    else if (o.threads < 0 || o.runs < 1)
        problem = "--threads must be >= 0 and --runs >= 1";
    if (problem) std::fprintf(stderr, "flashstate demo: %s\n", problem);
    return problem == nullptr;
}

} // namespace

int run_demo(const DemoOptions &options) {
    DemoOptions o = options;
    if (!resolve(o)) return 2;

    const Problem p = make_problem(o);
    const int64_t D = o.dim;
    const fst_tensor q = flashstate::View::f32(p.q.data(), D, o.n_q, o.n_head);
    const fst_tensor k_stored = flashstate::View::f32(p.k_stored.data(), D, o.n_kv, o.n_head_kv);
    const fst_tensor v_stored = flashstate::View::f32(p.v_stored.data(), D, o.n_kv, o.n_head_kv);
    const fst_tensor k_original = flashstate::View::f32(p.k_original.data(), D, o.n_kv, o.n_head_kv);
    const fst_tensor v_original = flashstate::View::f32(p.v_original.data(), D, o.n_kv, o.n_head_kv);
    const flashstate::Params params =
        flashstate::Params().scale(p.scale).causal(p.q_pos0, 0).threads(o.threads);

    Result segmented(D, o.n_head, o.n_q), unsplit(D, o.n_head, o.n_q), all_f32(D, o.n_head, o.n_q);
    const double segmented_ms = median_ms(o.runs, [&] { run_segmented(p, params, q, segmented); });
    const double unsplit_ms = median_ms(o.runs, [&] { run_unsplit(params, q, k_stored, v_stored, unsplit); });
    run_unsplit(params, q, k_original, v_original, all_f32);
    const std::vector<double> reference = double_attention_causal(p, p.k_stored, p.v_stored);

    const double err_split = rel_error(segmented.out, unsplit.out);
    const double err_seg_ref = rel_error(segmented.out, reference);
    const double err_unsplit_ref = rel_error(unsplit.out, reference);
    const double err_quant = rel_error(segmented.out, all_f32.out);

    const unsigned hw = std::thread::hardware_concurrency();
    std::printf("flashstate %s demo (isa %s, threads %d%s)\n", flashstate::version().c_str(),
                fst_isa_name(fst_isa_best()), o.threads > 0 ? o.threads : int(hw), o.threads > 0 ? "" : " = all");
    std::printf("%lld query heads, %lld KV heads, D %lld, %lld cached tokens, %lld query rows at positions "
                "%lld..%lld (causal), seed %llu\n\n",
                (long long)o.n_head, (long long)o.n_head_kv, (long long)D, (long long)o.n_kv, (long long)o.n_q,
                (long long)p.q_pos0, (long long)(o.n_kv - 1), (unsigned long long)o.seed);

    std::printf("%-10s %-14s %8s %9s %14s\n", "storage", "positions", "segments", "K+V MiB", "bytes/token");
    const double mib = 1024.0 * 1024.0;
    int64_t n_segments = 0;
    size_t total_bytes = 0;
    for (const Tier &t : p.tiers) {
        const size_t bytes = t.k.size() + t.v.size();
        char range[32];
        std::snprintf(range, sizeof range, "%lld..%lld", (long long)t.first, (long long)(t.first + t.count - 1));
        std::printf("%-10s %-14s %8lld %9.2f %14zu\n", fst_type_name(t.type), range,
                    (long long)segment_count(t, o.segment), bytes / mib, bytes / size_t(t.count));
        n_segments += segment_count(t, o.segment);
        total_bytes += bytes;
    }
    const size_t f32_bytes = 2 * sizeof(float) * size_t(D * o.n_kv * o.n_head_kv);
    char all[32];
    std::snprintf(all, sizeof all, "0..%lld", (long long)(o.n_kv - 1));
    std::printf("%-10s %-14s %8lld %9.2f %14zu\n", "mixed", all, (long long)n_segments, total_bytes / mib,
                total_bytes / size_t(o.n_kv));
    std::printf("%-10s %-14s %8s %9.2f %14zu   (%.2fx the mixed cache)\n\n", "f32 equiv.", all, "",
                f32_bytes / mib, f32_bytes / size_t(o.n_kv), double(f32_bytes) / double(total_bytes));

    std::printf("%-46s %11s %9s\n", "check (max|a-b| / max|b|)", "error", "bound");
    std::printf("%-46s %11.3e %9.0e  %s\n", "segmented vs unsplit (same stored values)", err_split,
                kSegmentedVsUnsplitBound, verdict(err_split, kSegmentedVsUnsplitBound));
    std::printf("%-46s %11.3e %9.0e  %s\n", "segmented vs double reference (stored values)", err_seg_ref,
                kReferenceBound, verdict(err_seg_ref, kReferenceBound));
    std::printf("%-46s %11.3e %9.0e  %s\n", "unsplit vs double reference (stored values)", err_unsplit_ref,
                kReferenceBound, verdict(err_unsplit_ref, kReferenceBound));
    std::printf("%-46s %11.3e %9s  %s\n\n", "mixed cache vs all-F32 originals", err_quant, "-",
                "(quantization effect, information)");

    std::printf("time, median of %d runs: segmented %.2f ms (%lld calls), unsplit %.2f ms (1 call on F32)\n",
                o.runs, segmented_ms, (long long)n_segments, unsplit_ms);

    const bool pass = err_split <= kSegmentedVsUnsplitBound && err_seg_ref <= kReferenceBound &&
                      err_unsplit_ref <= kReferenceBound;
    std::printf("%s\n", pass ? "PASS" : "FAIL: an error exceeds its bound");
    return pass ? 0 : 1;
}

} // namespace flashstate_tool
