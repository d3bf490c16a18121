// The mixed-precision FIFO cache (docs/cache.md): per layer, the n_keep region and a chain of tiers, hot first.
// Every token of a layer has a position (0, 1, 2, ... in append order). The n_keep region holds positions
// [0, n_kept); each tier holds a run of consecutive positions, older tiers older runs, the hot tier the newest
// (ending at next_pos - 1). So positions are never stored: they follow from next_pos and the tier sizes.
#pragma once

#include "cache/storage.h"
#include "cache/tier.h"

#include <flashstate/flashstate.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

namespace fst {

// A readers-writer lock that lets a waiting writer in: glibc's rwlock (behind std::shared_mutex) prefers readers,
// so readers attending back to back would starve an appender forever. A writer holds `gate` while it waits for
// and holds the lock; a reader passes through `gate` first, so new readers queue behind a waiting writer.
// Meets the SharedMutex requirements used here (std::unique_lock / std::shared_lock).
class LayerLock {
public:
    void lock() {
        gate_.lock();
        rw_.lock();
    }
    void unlock() {
        rw_.unlock();
        gate_.unlock();
    }
    void lock_shared() {
        gate_.lock();
        gate_.unlock();
        rw_.lock_shared();
    }
    void unlock_shared() { rw_.unlock_shared(); }

private:
    std::mutex gate_;
    std::shared_mutex rw_;
};

struct Layer {
    mutable LayerLock mutex; // one writer (append) or many readers
    std::optional<Tier> keep;        // the n_keep region (a ring that never pops), when n_keep > 0
    std::vector<Tier> tiers;         // tiers[0] hot, ... , last
    int64_t next_pos = 0;            // position of the next appended token
    std::vector<float> scratch;      // one row of max(D, DV) floats for conversions (writer only)

    int64_t n_kept() const { return keep ? keep->size() : 0; }
    int64_t n_held() const; // every token, n_keep region included
    // Position of the oldest token of tiers[i].
    int64_t first_pos(size_t i) const;
};

// Throws fst::Error with `status` (FST_ERR_INVALID_ARGUMENT for a caller's config, FST_ERR_CORRUPT for a loaded
// one) naming the field, the actual and the expected value.
void validate_config(const fst_cache_config &c, fst_status status);

// Tokens tiers[i] holds at most: its capacity; for the last tier with capacity 0, max_tokens - n_keep when
// max_tokens > 0 (it then never needs more), else 0 = unbounded.
int64_t tier_capacity(const fst_cache_config &c, int i);

// Appends validated rows k [D, n, H], v [DV, n, H] (F32 or F16) to one layer; the caller holds its lock.
void append_rows(const fst_cache_config &c, Layer &layer, const fst_tensor &k, const fst_tensor &v);

// The layer's tokens as segments, oldest first (n_keep region, then the last tier ... the hot tier); views[2i] and
// views[2i+1] are segment i's K and V. Returns the count; writes only when it is <= capacity.
int64_t layer_segments(const fst_cache_config &c, const Layer &layer, fst_segment *segments, fst_tensor *views,
                       int64_t capacity);
int64_t max_segments(const Layer &layer);

} // namespace fst

struct fst_cache {
    fst_cache_config config{};        // tiers[last].path points at file_path
    std::string file_path;            // of the file-backed tier; empty when there is none
    std::unique_ptr<fst::MappedFile> file;
    std::vector<std::unique_ptr<fst::Layer>> layers;
};

namespace fst {
// A new, empty cache for a validated config; its file-backed tier (if any) at file_path.
std::unique_ptr<fst_cache> make_cache(const fst_cache_config &c, const std::string &file_path);
} // namespace fst
