// Helpers shared by `flashstate demo` and `flashstate cache-study`: result buffers, the two error measures, medians,
// an owning fst_cache handle, the cache's stored contents as F32, and a temporary directory for the file tier.
#pragma once

#include <flashstate/flashstate.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace flashstate_tool {

// Throws flashstate::Error with the library's message when a C call failed.
void check(fst_status status);

// One attention result: state [2, n_head, n_q] and out [DV, n_head, n_q], with views over them.
struct Result {
    int64_t dv, n_head, n_q;
    std::vector<float> state, out;
    fst_tensor state_view{}, out_view{};
    Result(int64_t dv, int64_t n_head, int64_t n_q);
    Result(Result &&) = default; // the views stay valid: a moved vector keeps its buffer
    Result(const Result &) = delete;
    Result &operator=(const Result &) = delete;
    void reset(); // the empty state (fst_state_init)
};

// SPEC section 4: max |out - ref| / max(1e-6, max |ref|) over the whole output; NaN if any difference is NaN.
double rel_max_error(const std::vector<float> &out, const std::vector<float> &ref);
// Per output row (runs of `row` values): ||out - ref||_2 / ||ref||_2 (a zero reference row counts as 0 when out is
// zero too, else as 1); and the mean over the rows.
std::vector<double> rel_l2_rows(const std::vector<float> &out, const std::vector<float> &ref, int64_t row);
double mean_rel_l2(const std::vector<float> &out, const std::vector<float> &ref, int64_t row);

double median(std::vector<double> values);
double ms_since(std::chrono::steady_clock::time_point start);

struct CacheDeleter {
    void operator()(fst_cache *c) const { fst_cache_free(c); }
};
using CachePtr = std::unique_ptr<fst_cache, CacheDeleter>;
CachePtr make_cache(const fst_cache_config &config);
// One layer of n_head_kv heads, D = DV = dim, no kept tokens, no eviction; the caller sets n_tiers and tiers.
fst_cache_config one_layer_config(int64_t n_head_kv, int64_t dim, int64_t migrate_chunk);

// Every token a layer of the cache holds, oldest first, as stored (dequantized exactly with fst_dequantize_row):
// k and v F32 [D, n, n_head_kv] contiguous. n is returned. The positions must be 0 .. n-1 (nothing evicted).
int64_t stored_contents(fst_cache *cache, int32_t layer, std::vector<float> &k, std::vector<float> &v);

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it when this object goes away.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const { return path_; }

private:
    std::string path_;
};

} // namespace flashstate_tool
