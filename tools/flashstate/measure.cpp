#include "measure.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <stdexcept>

namespace flashstate_tool {

void check(fst_status status) {
    if (status != FST_OK) throw flashstate::Error(flashstate::Status::from_call(status));
}

Result::Result(int64_t dv_, int64_t n_head_, int64_t n_q_)
    : dv(dv_), n_head(n_head_), n_q(n_q_), state(size_t(2 * n_head_ * n_q_)), out(size_t(dv_ * n_head_ * n_q_)) {
    state_view = flashstate::View::state(state.data(), n_head, n_q);
    out_view = flashstate::View::out(out.data(), dv, n_head, n_q);
}

void Result::reset() { flashstate::state_init(state_view, out_view); }

double rel_max_error(const std::vector<float> &out, const std::vector<float> &ref) {
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
        const double d = std::fabs(double(out[i]) - double(ref[i]));
        if (std::isnan(d)) return std::numeric_limits<double>::quiet_NaN();
        max_diff = std::max(max_diff, d);
        max_ref = std::max(max_ref, std::fabs(double(ref[i])));
    }
    return max_diff / std::max(1e-6, max_ref);
}

std::vector<double> rel_l2_rows(const std::vector<float> &out, const std::vector<float> &ref, int64_t row) {
    std::vector<double> errors(out.size() / size_t(row));
    for (size_t r = 0; r < errors.size(); ++r) {
        double diff2 = 0.0, ref2 = 0.0;
        for (size_t c = r * size_t(row); c < (r + 1) * size_t(row); ++c) {
            const double d = double(out[c]) - double(ref[c]);
            diff2 += d * d;
            ref2 += double(ref[c]) * double(ref[c]);
        }
        errors[r] = ref2 > 0.0 ? std::sqrt(diff2 / ref2) : (diff2 > 0.0 ? 1.0 : 0.0);
    }
    return errors;
}

double mean_rel_l2(const std::vector<float> &out, const std::vector<float> &ref, int64_t row) {
    const std::vector<double> errors = rel_l2_rows(out, ref, row);
    double sum = 0.0;
    for (double e : errors) sum += e;
    return errors.empty() ? 0.0 : sum / double(errors.size());
}

double median(std::vector<double> values) {
    if (values.empty()) return 0.0;
    std::sort(values.begin(), values.end());
    const size_t n = values.size();
    return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

CachePtr make_cache(const fst_cache_config &config) {
    fst_cache *cache = nullptr;
    check(fst_cache_create(&config, &cache));
    return CachePtr(cache);
}

fst_cache_config one_layer_config(int64_t n_head_kv, int64_t dim, int64_t migrate_chunk) {
    fst_cache_config c = fst_cache_default_config();
    c.n_layer = 1;
    c.n_head_kv = int32_t(n_head_kv);
    c.head_dim_k = c.head_dim_v = dim;
    c.n_keep = 0;
    c.max_tokens = 0;
    c.migrate_chunk = migrate_chunk;
    return c;
}

int64_t stored_contents(fst_cache *cache, int32_t layer, std::vector<float> &k, std::vector<float> &v) {
    fst_cache_config config{};
    check(fst_cache_config_of(cache, &config));
    const int64_t D = config.head_dim_k, DV = config.head_dim_v, n_head_kv = config.n_head_kv;
    int64_t n_tokens = 0, next_pos = 0;
    check(fst_cache_n_tokens(cache, layer, &n_tokens, &next_pos));

    // Every tier plus the n_keep region is at most FST_CACHE_MAX_TIERS + 1 segments; ask again if not.
    int64_t capacity = FST_CACHE_MAX_TIERS + 1, n_segments = 0;
    std::vector<fst_segment> segments;
    std::vector<fst_tensor> views;
    for (;;) {
        segments.assign(size_t(capacity), fst_segment{});
        views.assign(size_t(2 * capacity), fst_tensor{});
        check(fst_cache_segments(cache, layer, segments.data(), views.data(), capacity, &n_segments));
        if (n_segments <= capacity) break;
        capacity = n_segments;
    }

    k.assign(size_t(D * n_tokens * n_head_kv), 0.0f);
    v.assign(size_t(DV * n_tokens * n_head_kv), 0.0f);
    int64_t first = 0; // token index of the segment's first key in the output
    for (int64_t s = 0; s < n_segments; ++s) {
        const fst_tensor &sk = *segments[size_t(s)].k, &sv = *segments[size_t(s)].v;
        const int64_t n = sk.ne[1];
        if (first + n > n_tokens) throw std::runtime_error("fst_cache_segments: more keys than fst_cache_n_tokens");
        if (segments[size_t(s)].kv_pos0 != first)
            throw std::runtime_error("fst_cache_segments: positions are not 0, 1, 2, ... (evicted tokens?)");
        for (int64_t g = 0; g < n_head_kv; ++g)
            for (int64_t j = 0; j < n; ++j) {
                const auto *k_row = static_cast<const unsigned char *>(sk.data) + j * sk.nb[1] + g * sk.nb[2];
                const auto *v_row = static_cast<const unsigned char *>(sv.data) + j * sv.nb[1] + g * sv.nb[2];
                check(fst_dequantize_row(sk.type, k_row, &k[size_t((g * n_tokens + first + j) * D)], D));
                check(fst_dequantize_row(sv.type, v_row, &v[size_t((g * n_tokens + first + j) * DV)], DV));
            }
        first += n;
    }
    if (first != n_tokens) throw std::runtime_error("fst_cache_segments: fewer keys than fst_cache_n_tokens");
    return n_tokens;
}

TempDir::TempDir() {
    const char *base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/flashstate-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr)
        throw std::runtime_error("cannot create a temporary directory from " + pattern);
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ignored; // nothing to do about a failure here
    std::filesystem::remove_all(path_, ignored);
}

} // namespace flashstate_tool
