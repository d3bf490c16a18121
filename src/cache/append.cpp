// Appending to a layer: the n_keep region first, then the hot tier; a full tier moves its oldest migrate_chunk
// tokens to the next tier (converted once, from what it stored), and with max_tokens the oldest tokens are evicted
// before new ones arrive. Every step moves whole chunks, so the work per appended token is constant.
#include "cache/cache.h"

#include "common/error.h"
#include "tensor/types.h"
#include "tensor/view.h"

#include <algorithm>
#include <cstring>

namespace fst {

namespace {

// One row of n elements from `from` to `to`: a copy when the types agree, else through F32 (exact widening, then
// rounding or ggml's reference quantizer).
void convert_row(fst_type from, const void *src, fst_type to, void *dst, int64_t n, float *scratch) {
    if (from == to) {
        std::memcpy(dst, src, block_bytes(to) * size_t(n / block_elems(to)));
        return;
    }
    row_to_f32(from, src, scratch, n);
    row_from_f32(to, scratch, dst, n);
}

class Appender {
public:
    Appender(const fst_cache_config &c, Layer &layer) : c_(c), layer_(layer), tiers_(layer.tiers) {}

    void append(const fst_tensor &k, const fst_tensor &v) {
        const int64_t n = k.ne[1];
        // Every slot this append may need exists before anything moves (all or nothing if allocation fails): the
        // unbounded last tier receives at most what the other tiers hold plus the new tokens.
        Tier &last = tiers_.back();
        if (!last.bounded()) last.reserve(layer_.n_held() - layer_.n_kept() + n);

        int64_t i = 0;
        while (i < n) {
            if (layer_.n_kept() < c_.n_keep) {
                const int64_t p = std::min(n - i, c_.n_keep - layer_.n_kept());
                write(*layer_.keep, k, v, i, p);
                i += p;
                continue;
            }
            // New tokens enter the hot tier, or tiers[1] when the hot tier has capacity 0 (no hot window: they are
            // converted from the input straight to the cold type).
            const size_t entry = tiers_.size() > 1 && c_.tiers[0].capacity == 0 ? 1 : 0;
            Tier &hot = tiers_[entry];
            const int64_t chunk = std::min(c_.migrate_chunk, hot.capacity());
            int64_t p = hot.bounded() ? std::min(n - i, hot.room() > 0 ? hot.room() : chunk) : n - i;
            // Eviction can only drop tokens already held, so a step adds at most max_tokens - n_keep of them (the
            // older part of a larger batch is written, then evicted by the next step).
            if (c_.max_tokens > 0) {
                p = std::min(p, c_.max_tokens - c_.n_keep);
                evict(layer_.n_held() + p - c_.max_tokens);
            }
            while (hot.bounded() && hot.room() < p) spill(entry);
            write(hot, k, v, i, p);
            i += p;
        }
    }

private:
    // Rows [i, i + p) of k and v to the end of `tier`.
    void write(Tier &tier, const fst_tensor &k, const fst_tensor &v, int64_t i, int64_t p) {
        for (int64_t h = 0; h < c_.n_head_kv; ++h)
            for (int64_t t = 0; t < p; ++t) {
                convert_row(k.type, at(k, i + t, h, 0), tier.type(), tier.k_row(tier.size() + t, h), c_.head_dim_k,
                            layer_.scratch.data());
                convert_row(v.type, at(v, i + t, h, 0), tier.type(), tier.v_row(tier.size() + t, h), c_.head_dim_v,
                            layer_.scratch.data());
            }
        tier.push_back(p);
        layer_.next_pos += p;
    }

    // Moves the oldest migrate_chunk tokens (or all, if fewer) of tiers_[i] to the end of tiers_[i + 1].
    void spill(size_t i) {
        Tier &from = tiers_[i];
        Tier &to = tiers_[i + 1];
        if (i + 1 >= tiers_.size()) fail_message("internal: no cache tier after the last", FST_ERR_INVALID_ARGUMENT);
        const int64_t m = std::min(c_.migrate_chunk, from.size());
        while (to.bounded() && to.room() < m) {
            // The last tier always has room: eviction ran first, and it holds max_tokens - n_keep tokens.
            if (i + 2 >= tiers_.size()) fail_message("internal: the last cache tier is full", FST_ERR_INVALID_ARGUMENT);
            spill(i + 1);
        }
        for (int64_t h = 0; h < c_.n_head_kv; ++h)
            for (int64_t t = 0; t < m; ++t) {
                convert_row(from.type(), from.k_row(t, h), to.type(), to.k_row(to.size() + t, h), c_.head_dim_k,
                            layer_.scratch.data());
                convert_row(from.type(), from.v_row(t, h), to.type(), to.v_row(to.size() + t, h), c_.head_dim_v,
                            layer_.scratch.data());
            }
        to.push_back(m);
        from.pop_front(m);
    }

    // Drops the `count` oldest tokens outside the n_keep region (the oldest are in the last non-empty tier).
    void evict(int64_t count) {
        for (size_t i = tiers_.size(); count > 0 && i-- > 0;) {
            const int64_t m = std::min(count, tiers_[i].size());
            if (m > 0) tiers_[i].pop_front(m);
            count -= m;
        }
    }

    const fst_cache_config &c_;
    Layer &layer_;
    std::vector<Tier> &tiers_;
};

} // namespace

void append_rows(const fst_cache_config &c, Layer &layer, const fst_tensor &k, const fst_tensor &v) {
    Appender(c, layer).append(k, v);
}

} // namespace fst
