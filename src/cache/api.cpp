// The fst_cache_* entry points: argument checks, the layer locks, and the calls into cache/append/persist.
#include "cache/cache.h"
#include "cache/persist.h"

#include "common/error.h"
#include "tensor/view.h"

#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

using fst::fail;
using fst::guard;

namespace {

template <class T> void expect_pointer(const char *name, const T *p) {
    if (p == nullptr) fail(name, "pointer", "NULL", "non-NULL");
}

fst::Layer &layer_of(const fst_cache *cache, int32_t layer) {
    expect_pointer("cache", cache);
    if (layer < 0 || layer >= cache->config.n_layer)
        fail("layer", "index", layer, "0 .. " + std::to_string(cache->config.n_layer - 1) + " (config.n_layer = " +
                                          std::to_string(cache->config.n_layer) + ")");
    return *cache->layers[size_t(layer)];
}

// Thread-local so that concurrent readers of one layer need no shared scratch; reused, so a steady-state call
// allocates nothing.
struct SegmentScratch {
    std::vector<fst_segment> segments;
    std::vector<fst_tensor> views;
};
thread_local SegmentScratch segment_scratch;

} // namespace

extern "C" {

fst_cache_config fst_cache_default_config(void) {
    fst_cache_config c{};
    c.n_layer = 1;
    c.n_head_kv = 1;
    c.head_dim_k = c.head_dim_v = 128;
    c.n_tiers = 2;
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 256, nullptr};
    c.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 0, nullptr};
    c.n_keep = 0;
    c.max_tokens = 0;
    c.migrate_chunk = 32;
    return c;
}

fst_status fst_cache_create(const fst_cache_config *config, fst_cache **cache) {
    return guard("fst_cache_create", [&] {
        expect_pointer("config", config);
        expect_pointer("cache", cache);
        fst::validate_config(*config, FST_ERR_INVALID_ARGUMENT);
        const fst_cache_tier &last = config->tiers[config->n_tiers - 1];
        *cache = fst::make_cache(*config, last.path ? last.path : "").release();
    });
}

void fst_cache_free(fst_cache *cache) { delete cache; }

fst_status fst_cache_config_of(const fst_cache *cache, fst_cache_config *config) {
    return guard("fst_cache_config_of", [&] {
        expect_pointer("cache", cache);
        expect_pointer("config", config);
        *config = cache->config;
    });
}

fst_status fst_cache_append(fst_cache *cache, int32_t layer, const fst_tensor *k, const fst_tensor *v) {
    return guard("fst_cache_append", [&] {
        fst::Layer &L = layer_of(cache, layer);
        const fst_cache_config &c = cache->config;
        fst::check_view("k", k, {FST_TYPE_F32, FST_TYPE_F16});
        fst::check_view("v", v, {FST_TYPE_F32, FST_TYPE_F16});
        fst::expect_extent("k", k, 0, c.head_dim_k, "the cache's head_dim_k");
        fst::expect_extent("v", v, 0, c.head_dim_v, "the cache's head_dim_v");
        fst::expect_extent("k", k, 2, c.n_head_kv, "the cache's n_head_kv");
        fst::expect_extent("v", v, 2, c.n_head_kv, "the cache's n_head_kv");
        fst::expect_extent("k", k, 3, 1, "one sequence per cache");
        fst::expect_extent("v", v, 3, 1, "one sequence per cache");
        fst::expect_extent("v", v, 1, k->ne[1], "k.ne[1], the number of tokens");
        std::unique_lock<fst::LayerLock> lock(L.mutex);
        fst::append_rows(c, L, *k, *v);
    });
}

fst_status fst_cache_n_tokens(const fst_cache *cache, int32_t layer, int64_t *n_tokens, int64_t *next_pos) {
    return guard("fst_cache_n_tokens", [&] {
        const fst::Layer &L = layer_of(cache, layer);
        std::shared_lock<fst::LayerLock> lock(L.mutex);
        if (n_tokens) *n_tokens = L.n_held();
        if (next_pos) *next_pos = L.next_pos;
    });
}

fst_status fst_cache_attn(fst_cache *cache, const fst_attn_params *p, int32_t layer, const fst_tensor *q,
                          const fst_tensor *sinks, fst_tensor *state, fst_tensor *out) {
    return guard("fst_cache_attn", [&] {
        fst::Layer &L = layer_of(cache, layer);
        const fst_cache_config &c = cache->config;
        expect_pointer("params", p);
        expect_pointer("q", q);
        fst::expect_extent("q", q, 0, c.head_dim_k, "the cache's head_dim_k");
        if (q->ne[2] < 1 || q->ne[2] % c.n_head_kv != 0)
            fail("q", "ne[2]", q->ne[2], "a positive multiple of the cache's n_head_kv = " + std::to_string(c.n_head_kv));
        fst::expect_extent("q", q, 3, 1, "one sequence per cache");

        std::shared_lock<fst::LayerLock> lock(L.mutex);
        SegmentScratch &s = segment_scratch;
        const int64_t n = fst::max_segments(L);
        if (s.segments.size() < size_t(n)) {
            s.segments.resize(size_t(n));
            s.views.resize(2 * size_t(n));
        }
        const int64_t n_segments = fst::layer_segments(c, L, s.segments.data(), s.views.data(), n);
        fst_attn_params params = *p;
        params.kv_pos0 = 0;
        params.kv_pos = nullptr;
        const fst_status status = fst_attn_segments(&params, q, s.segments.data(), n_segments, sinks, state, out);
        if (status != FST_OK) throw fst::Error(status, fst_last_error());
    });
}

fst_status fst_cache_segments(fst_cache *cache, int32_t layer, fst_segment *segments, fst_tensor *views,
                              int64_t capacity, int64_t *n_segments) {
    return guard("fst_cache_segments", [&] {
        const fst::Layer &L = layer_of(cache, layer);
        expect_pointer("n_segments", n_segments);
        if (capacity < 0) fail("capacity", "value", capacity, ">= 0");
        if (capacity > 0) {
            expect_pointer("segments", segments);
            expect_pointer("views", views);
        }
        std::shared_lock<fst::LayerLock> lock(L.mutex);
        const int64_t needed = fst::layer_segments(cache->config, L, nullptr, nullptr, 0);
        if (needed <= capacity) fst::layer_segments(cache->config, L, segments, views, capacity);
        *n_segments = needed;
    });
}

fst_status fst_cache_stats(const fst_cache *cache, int32_t layer, fst_cache_tier_stats *stats, int32_t n_stats) {
    return guard("fst_cache_stats", [&] {
        const fst::Layer &L = layer_of(cache, layer);
        const fst_cache_config &c = cache->config;
        expect_pointer("stats", stats);
        if (n_stats != c.n_tiers + 1)
            fail("n_stats", "value", n_stats, std::to_string(c.n_tiers + 1) + " (config.n_tiers + 1, the last entry for the n_keep region)");
        std::shared_lock<fst::LayerLock> lock(L.mutex);
        for (int i = 0; i < c.n_tiers; ++i) {
            const fst::Tier &t = L.tiers[size_t(i)];
            stats[i] = fst_cache_tier_stats{t.type(), t.size(), t.capacity(), t.bytes()};
        }
        stats[c.n_tiers] = L.keep ? fst_cache_tier_stats{L.keep->type(), L.keep->size(), L.keep->capacity(), L.keep->bytes()}
                                  : fst_cache_tier_stats{c.tiers[0].type, 0, 0, 0};
    });
}

fst_status fst_cache_save(const fst_cache *cache, const char *path) {
    return guard("fst_cache_save", [&] {
        expect_pointer("cache", cache);
        expect_pointer("path", path);
        fst::save_cache(*cache, path);
    });
}

fst_status fst_cache_load(const char *path, const char *file_tier_path, fst_cache **cache) {
    return guard("fst_cache_load", [&] {
        expect_pointer("path", path);
        expect_pointer("cache", cache);
        *cache = fst::load_cache(path, file_tier_path).release();
    });
}

} // extern "C"
