// `flashstate cache-study` (accuracy): for each K variant (with n outlier channels per KV head, and without), each
// cold type (Q8_0, Q4_0) and each hot window W, stream the synthetic layer's tokens into a cache whose F16 hot tier
// holds the newest W tokens (migrate_chunk 1, so exactly W) and whose cold tier holds the rest, and at evenly
// spaced query positions in the second half of the stream compare fst_cache_attn (that position's query, all
// heads, causal) with fst_attn_with_state over F16 copies of the same tokens - the all-F16 cache.
#include "cache_study.h"

#include "measure.h"
#include "progress.h"
#include "synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace flashstate_tool {
namespace {

// One line of the table and of the CSV file.
struct AccuracyRow {
    int64_t outliers = 0;
    fst_type cold = FST_TYPE_Q8_0;
    int64_t window = 0;
    double bytes_per_token = 0;  // K and V as stored, all KV heads, at the end of the stream
    double max_rel = 0;          // max over query positions of the SPEC measure (all heads of one position)
    double mean_rel = 0;         // mean over query positions of the same
    double mean_l2 = 0;          // mean over query positions and heads of ||out - ref|| / ||ref||
    double diffuse_l2 = 0;       // the same over the diffuse heads only (h mod 4 == 0, synthetic.h)
    double local_l2 = 0;         // and over the others, which attend mostly to recent tokens
};

// The hot window W as a cache: an F16 tier of W tokens (0: none, every token is quantized as it is appended), then
// the cold type, unbounded.
fst_cache_config study_config(const StudyOptions &o, int64_t window, fst_type cold) {
    fst_cache_config c = one_layer_config(o.n_head_kv, o.dim, 1); // chunk 1: the hot tier holds exactly W tokens
    c.n_tiers = 2;
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, window, nullptr};
    c.tiers[1] = fst_cache_tier{cold, 0, nullptr};
    return c;
}

// F32 [D, N, heads] rounded to F16, same layout.
std::vector<uint16_t> to_f16(const std::vector<float> &values) {
    std::vector<uint16_t> out(values.size());
    check(fst_quantize_row(FST_TYPE_F16, values.data(), out.data(), int64_t(values.size())));
    return out;
}

AccuracyRow measure_config(const StudyOptions &o, const LayerData &layer, const std::vector<uint16_t> &k_f16,
                           const std::vector<uint16_t> &v_f16, const std::vector<int64_t> &positions,
                           int64_t window, fst_type cold) {
    CachePtr cache = make_cache(study_config(o, window, cold));
    const fst_tensor k_all = flashstate::View::contiguous(FST_TYPE_F16, k_f16.data(), o.dim, o.tokens, o.n_head_kv);
    const fst_tensor v_all = flashstate::View::contiguous(FST_TYPE_F16, v_f16.data(), o.dim, o.tokens, o.n_head_kv);
    Result mixed(o.dim, o.n_head, 1), all_f16(o.dim, o.n_head, 1);
    AccuracyRow row;
    row.window = window;
    row.cold = cold;
    int64_t appended = 0;
    for (int64_t t : positions) {
        const fst_tensor k = token_view(layer, layer.k, o.n_head_kv, appended, t + 1 - appended);
        const fst_tensor v = token_view(layer, layer.v, o.n_head_kv, appended, t + 1 - appended);
        check(fst_cache_append(cache.get(), 0, &k, &v));
        appended = t + 1;

        const fst_tensor q = token_view(layer, layer.q, o.n_head, t, 1);
        const fst_attn_params p =
            flashstate::Params().scale(float(1.0 / std::sqrt(double(o.dim)))).causal(t, 0).threads(o.threads);
        mixed.reset();
        check(fst_cache_attn(cache.get(), &p, 0, &q, nullptr, &mixed.state_view, &mixed.out_view));
        all_f16.reset();
        flashstate::attn_with_state(p, q, flashstate::View::rows(k_all, 0, t + 1),
                                    flashstate::View::rows(v_all, 0, t + 1), all_f16.state_view, all_f16.out_view);
        const double rel = rel_max_error(mixed.out, all_f16.out);
        row.max_rel = std::max(row.max_rel, rel);
        row.mean_rel += rel / double(positions.size());
        const std::vector<double> l2 = rel_l2_rows(mixed.out, all_f16.out, o.dim); // one row per head
        for (size_t h = 0; h < l2.size(); ++h) {
            row.mean_l2 += l2[h] / double(l2.size() * positions.size());
            if (h % 4 == 0)
                row.diffuse_l2 += l2[h] / double((l2.size() + 3) / 4 * positions.size());
            else
                row.local_l2 += l2[h] / double((l2.size() - (l2.size() + 3) / 4) * positions.size());
        }
    }

    // Bytes as stored (not as allocated: unbounded tiers grow by doubling extents).
    std::vector<fst_cache_tier_stats> stats(3);
    check(fst_cache_stats(cache.get(), 0, stats.data(), 3));
    double bytes = 0;
    for (const fst_cache_tier_stats &s : stats)
        bytes += double(s.n_tokens) * 2.0 * double(o.n_head_kv) * double(flashstate::row_bytes(s.type, o.dim));
    row.bytes_per_token = bytes / double(appended);
    return row;
}

void print_row(std::FILE *f, const StudyOptions &o, const AccuracyRow &r, bool csv) {
    if (csv)
        std::fprintf(f, "%lld,%lld,%lld,%s,%lld,%.1f,%.6e,%.6e,%.6e,%.6e,%.6e\n", (long long)o.tokens,
                     (long long)o.queries, (long long)r.outliers, fst_type_name(r.cold), (long long)r.window,
                     r.bytes_per_token, r.max_rel, r.mean_rel, r.mean_l2, r.diffuse_l2, r.local_l2);
    else
        std::fprintf(f, "%8lld  %-5s %6lld %11.0f  %10.3e %10.3e %10.3e %10.3e %10.3e\n", (long long)r.outliers,
                     fst_type_name(r.cold), (long long)r.window, r.bytes_per_token, r.max_rel, r.mean_rel, r.mean_l2,
                     r.diffuse_l2, r.local_l2);
}

} // namespace

int run_accuracy_study(const StudyOptions &o) {
    if (o.n_head % o.n_head_kv != 0 || o.dim % 32 != 0 || o.queries < 1 || o.tokens < 2 * o.queries ||
        o.tokens <= o.windows.back()) {
        std::fprintf(stderr, "flashstate cache-study: need --heads a multiple of --kv-heads, --dim a multiple of 32 "
                             "and --tokens >= 2 * --queries, > the largest hot window\n");
        return 2;
    }
    std::FILE *csv = nullptr;
    if (!o.csv.empty() && (csv = std::fopen(o.csv.c_str(), "w")) == nullptr) {
        std::fprintf(stderr, "flashstate cache-study: cannot write %s\n", o.csv.c_str());
        return 2;
    }
    // Query positions: `queries` evenly spaced over the second half, the last one the last token.
    std::vector<int64_t> positions;
    for (int64_t i = 1; i <= o.queries; ++i)
        positions.push_back(o.tokens / 2 + (o.tokens - o.tokens / 2) * i / o.queries - 1);

    std::printf("flashstate %s cache-study: %lld query heads, %lld KV heads, D %lld, %lld tokens, seed %llu; "
                "%lld query positions %lld..%lld (causal, every head)\n",
                flashstate::version().c_str(), (long long)o.n_head, (long long)o.n_head_kv, (long long)o.dim,
                (long long)o.tokens, (unsigned long long)o.seed, (long long)positions.size(),
                (long long)positions.front(), (long long)positions.back());
    std::printf("error of attention over the mixed cache (hot F16 window + cold tier) vs over all-F16 copies:\n"
                "max rel = max over positions of max|out - ref| / max|ref| (SPEC section 4); mean rel = its mean;\n"
                "mean L2 = mean over positions and heads of ||out - ref||_2 / ||ref||_2; diffuse L2 = the same over\n"
                "the heads with h mod 4 == 0, which attend over the whole past; local L2 = over the others\n\n");
    std::printf("%8s  %-5s %6s %11s  %10s %10s %10s %10s %10s\n", "outliers", "cold", "hot", "bytes/token",
                "max rel", "mean rel", "mean L2", "diffuse L2", "local L2");
    if (csv)
        std::fprintf(csv, "tokens,queries,k_outliers,cold_type,hot_window,bytes_per_token,max_rel_error,"
                          "mean_rel_error,mean_rel_l2,diffuse_rel_l2,local_rel_l2\n");

    const std::vector<int64_t> outlier_variants = o.outliers > 0 ? std::vector<int64_t>{o.outliers, 0}
                                                                 : std::vector<int64_t>{0};
    const fst_type colds[] = {FST_TYPE_Q8_0, FST_TYPE_Q4_0};
    Progress progress("cache-study", int64_t(outlier_variants.size() * 2 * o.windows.size()));
    int64_t done = 0;
    bool finite = true;
    for (int64_t outliers : outlier_variants) {
        SyntheticShape shape;
        shape.n_head = o.n_head;
        shape.n_head_kv = o.n_head_kv;
        shape.dim = o.dim;
        shape.n_outliers = int(outliers);
        const LayerData layer = generate_layer(shape, o.seed, o.tokens);
        const std::vector<uint16_t> k_f16 = to_f16(layer.k), v_f16 = to_f16(layer.v);
        for (fst_type cold : colds)
            for (int64_t window : o.windows) {
                AccuracyRow row = measure_config(o, layer, k_f16, v_f16, positions, window, cold);
                row.outliers = outliers;
                finite = finite && std::isfinite(row.max_rel) && std::isfinite(row.mean_l2);
                progress.clear();
                print_row(stdout, o, row, false);
                std::fflush(stdout);
                if (csv) print_row(csv, o, row, true);
                progress.update(++done);
            }
    }
    progress.finish();
    if (csv && std::fclose(csv) != 0) {
        std::fprintf(stderr, "flashstate cache-study: error writing %s\n", o.csv.c_str());
        return 2;
    }
    if (!finite) std::fprintf(stderr, "flashstate cache-study: an error is NaN or infinite\n");
    return finite ? 0 : 1;
}

} // namespace flashstate_tool
