#include "cache/cache.h"

#include "common/error.h"
#include "tensor/types.h"

#include <algorithm>
#include <string>

namespace fst {

namespace {

std::string tier_name(int i) { return "config.tiers[" + std::to_string(i) + "]"; }

// Keeps every byte count far from size_t overflow (and every real machine's memory).
constexpr int64_t kMaxDim = int64_t(1) << 20;
constexpr int64_t kMaxTokens = int64_t(1) << 40;

void check_range(const char *field, int64_t v, int64_t lo, int64_t hi, fst_status status) {
    if (v < lo || v > hi)
        fail("config", field, v, hi == kMaxTokens || hi == kMaxDim ? ">= " + std::to_string(lo)
                                                                   : std::to_string(lo) + " .. " + std::to_string(hi),
             status);
}

} // namespace

void validate_config(const fst_cache_config &c, fst_status status) {
    check_range("n_layer", c.n_layer, 1, 1 << 16, status);
    check_range("n_head_kv", c.n_head_kv, 1, 1 << 16, status);
    check_range("head_dim_k", c.head_dim_k, 1, kMaxDim, status);
    check_range("head_dim_v", c.head_dim_v, 1, kMaxDim, status);
    check_range("n_tiers", c.n_tiers, 1, FST_CACHE_MAX_TIERS, status);
    check_range("migrate_chunk", c.migrate_chunk, 1, kMaxTokens, status);
    check_range("n_keep", c.n_keep, 0, kMaxTokens, status);
    check_range("max_tokens", c.max_tokens, 0, kMaxTokens, status);
    const int last = c.n_tiers - 1;
    for (int i = 0; i < c.n_tiers; ++i) {
        const fst_cache_tier &t = c.tiers[i];
        const std::string name = tier_name(i);
        const int raw = enum_value(t.type);
        const fst_type type = fst_type(raw);
        const bool in_file = t.path != nullptr;
        if (i == 0 && in_file) fail(name, "path", std::string("'") + t.path + "'", "NULL (the hot tier lives in RAM)", status);
        if (in_file && i != last)
            fail(name, "path", std::string("'") + t.path + "'",
                 "NULL (only the last tier, tiers[" + std::to_string(last) + "], may be file-backed)", status);
        if (in_file && t.path[0] == '\0') fail(name, "path", "''", "a file name", status);
        const bool f16_f32 = raw == FST_TYPE_F32 || raw == FST_TYPE_F16;
        const bool quantized = raw == FST_TYPE_Q8_0 || raw == FST_TYPE_Q4_0;
        const char *actual = type_known(raw) ? type_name(type) : "unknown";
        if (i == 0 && !f16_f32)
            fail(name, "type", actual, "f32 or f16 (the hot tier)", status == FST_ERR_INVALID_ARGUMENT ? FST_ERR_UNSUPPORTED : status);
        if (i > 0 && !in_file && !quantized)
            fail(name, "type", actual, "q8_0 or q4_0 (a cold RAM tier)", status == FST_ERR_INVALID_ARGUMENT ? FST_ERR_UNSUPPORTED : status);
        if (i > 0 && in_file && !(f16_f32 || quantized || raw == FST_TYPE_BF16))
            fail(name, "type", actual, "f32, f16, bf16, q8_0 or q4_0 (a file-backed tier)",
                 status == FST_ERR_INVALID_ARGUMENT ? FST_ERR_UNSUPPORTED : status);
        if (quantized) {
            const std::string why = "a multiple of 32 (" + name + ".type is " + actual + ")";
            if (c.head_dim_k % 32 != 0) fail("config", "head_dim_k", c.head_dim_k, why, status);
            if (c.head_dim_v % 32 != 0) fail("config", "head_dim_v", c.head_dim_v, why, status);
        }
        if (t.capacity < 0 || t.capacity > kMaxTokens) fail(name, "capacity", t.capacity, ">= 0", status);
        // A hot tier of capacity 0 in front of cold tiers is no hot window: tokens go straight to tiers[1].
        if (i < last && t.capacity < c.migrate_chunk && !(i == 0 && t.capacity == 0))
            fail(name, "capacity", t.capacity,
                 "0 (hot tier: no hot window) or >= migrate_chunk = " + std::to_string(c.migrate_chunk) +
                     " (only the last tier may be unbounded, 0)",
                 status);
    }
    const int64_t last_capacity = c.tiers[last].capacity;
    if (c.max_tokens > 0 && c.max_tokens <= c.n_keep)
        fail("config", "max_tokens", c.max_tokens,
             "0 (unlimited) or > n_keep = " + std::to_string(c.n_keep) + " (room for tokens besides the kept ones)",
             status);
    if (c.max_tokens == 0 && last_capacity > 0)
        fail(tier_name(last), "capacity", last_capacity,
             "0 (unbounded) when max_tokens = 0: a bounded last tier needs max_tokens to say what to evict", status);
    if (c.max_tokens > 0 && last_capacity > 0 && last_capacity < c.max_tokens - c.n_keep)
        fail(tier_name(last), "capacity", last_capacity,
             "0 or >= max_tokens - n_keep = " + std::to_string(c.max_tokens - c.n_keep) +
                 " (the last tier must hold every token eviction keeps)",
             status);
    // Byte counts stay far from size_t overflow: a ring (or the n_keep region) is allocated whole at creation.
    const auto check_bytes = [&](const std::string &name, const char *field, int64_t tokens, int raw_type) {
        const fst_type type = fst_type(raw_type);
        const double row = double(block_bytes(type)) * double(c.head_dim_k + c.head_dim_v) / double(block_elems(type));
        const double bytes = double(tokens) * double(c.n_head_kv) * row;
        if (bytes > double(int64_t(1) << 46))
            fail(name, field, tokens, "at most 2^46 bytes of K and V per layer", status);
    };
    for (int i = 0; i < c.n_tiers; ++i) check_bytes(tier_name(i), "capacity", tier_capacity(c, i), enum_value(c.tiers[i].type));
    // An unbounded last tier grows in blocks of max(256, migrate_chunk) tokens, doubling: the first must fit too.
    if (tier_capacity(c, last) == 0)
        check_bytes("config", "migrate_chunk", std::max<int64_t>(256, c.migrate_chunk), enum_value(c.tiers[last].type));
    check_bytes("config", "n_keep", c.n_keep, enum_value(c.tiers[0].type));
}

int64_t tier_capacity(const fst_cache_config &c, int i) {
    const int64_t configured = c.tiers[i].capacity;
    if (i < c.n_tiers - 1 || configured > 0) return configured;
    return c.max_tokens > 0 ? c.max_tokens - c.n_keep : 0;
}

int64_t Layer::n_held() const {
    int64_t n = n_kept();
    for (const Tier &t : tiers) n += t.size();
    return n;
}

int64_t Layer::first_pos(size_t i) const {
    int64_t pos = next_pos;
    for (size_t j = 0; j <= i; ++j) pos -= tiers[j].size();
    return pos;
}

std::unique_ptr<fst_cache> make_cache(const fst_cache_config &c, const std::string &file_path) {
    auto cache = std::make_unique<fst_cache>();
    cache->config = c;
    for (int i = c.n_tiers; i < FST_CACHE_MAX_TIERS; ++i) cache->config.tiers[i] = fst_cache_tier{};
    const int last = c.n_tiers - 1;
    if (c.tiers[last].path) {
        cache->file_path = file_path;
        cache->file = std::make_unique<MappedFile>(file_path);
        cache->config.tiers[last].path = cache->file_path.c_str();
    }
    const int64_t log_base = std::max<int64_t>(256, c.migrate_chunk);
    for (int l = 0; l < c.n_layer; ++l) {
        auto layer = std::make_unique<Layer>();
        const fst_type hot = c.tiers[0].type;
        if (c.n_keep > 0) layer->keep.emplace(hot, c.head_dim_k, c.head_dim_v, c.n_head_kv, c.n_keep, log_base, nullptr);
        layer->tiers.reserve(size_t(c.n_tiers));
        for (int i = 0; i < c.n_tiers; ++i)
            layer->tiers.emplace_back(c.tiers[i].type, c.head_dim_k, c.head_dim_v, c.n_head_kv, tier_capacity(c, i),
                                      log_base, i == last ? cache->file.get() : nullptr);
        layer->scratch.assign(size_t(std::max(c.head_dim_k, c.head_dim_v)), 0.0f);
        cache->layers.push_back(std::move(layer));
    }
    return cache;
}

int64_t max_segments(const Layer &layer) {
    int64_t n = layer.keep ? 1 : 0;
    for (const Tier &t : layer.tiers) n += t.max_runs();
    return n;
}

int64_t layer_segments(const fst_cache_config &c, const Layer &layer, fst_segment *segments, fst_tensor *views,
                       int64_t capacity) {
    int64_t n = 0;
    const auto emit = [&](const Tier &tier, const Extent &e, int64_t slot, int64_t count, int64_t pos0) {
        if (n < capacity) {
            fst_tensor &k = views[2 * n];
            fst_tensor &v = views[2 * n + 1];
            const fst_type type = tier.type();
            const size_t block = block_bytes(type);
            const size_t cap = size_t(e.capacity);
            k = fst_tensor{type, {c.head_dim_k, count, c.n_head_kv, 1},
                           {block, tier.row_bytes_k(), cap * tier.row_bytes_k(), cap * tier.row_bytes_k() * size_t(c.n_head_kv)},
                           e.k + size_t(slot) * tier.row_bytes_k()};
            v = fst_tensor{type, {c.head_dim_v, count, c.n_head_kv, 1},
                           {block, tier.row_bytes_v(), cap * tier.row_bytes_v(), cap * tier.row_bytes_v() * size_t(c.n_head_kv)},
                           e.v + size_t(slot) * tier.row_bytes_v()};
            segments[n] = fst_segment{&k, &v, nullptr, pos0, nullptr};
        }
        ++n;
    };
    const auto emit_tier = [&](const Tier &tier, int64_t pos0) {
        tier.for_each_run([&](const Extent &e, int64_t slot, int64_t first, int64_t count) {
            emit(tier, e, slot, count, pos0 + first);
        });
    };
    if (layer.keep) emit_tier(*layer.keep, 0);
    for (size_t i = layer.tiers.size(); i-- > 0;) emit_tier(layer.tiers[i], layer.first_pos(i));
    return n;
}

} // namespace fst
