// One tier of one layer: the K and V rows of a run of consecutive tokens, oldest first, in one storage type.
// A bounded tier is a ring over one extent of `capacity` tokens; an unbounded tier (the last one, when nothing is
// ever evicted) is a log that grows by extents of base, 2 base, 4 base, ... tokens and never moves a row, so the
// extent boundaries are a function of the token index alone (a loaded cache splits into the same segments).
// Each extent stores K as [D, capacity, n_head_kv] and V as [DV, capacity, n_head_kv], so a run of slots is an
// attention segment with ggml strides.
#pragma once

#include "cache/storage.h"

#include <flashstate/flashstate.h>

#include <cstdint>
#include <vector>

namespace fst {

struct Extent {
    unsigned char *k = nullptr, *v = nullptr;
    int64_t capacity = 0; // tokens
    size_t bytes = 0;     // K and V together
};

class Tier {
public:
    // capacity > 0: a ring, allocated now; capacity == 0: a log of extents of log_base << e tokens.
    // file == nullptr: RAM; else pieces of that file.
    Tier(fst_type type, int64_t D, int64_t DV, int64_t n_head_kv, int64_t capacity, int64_t log_base,
         MappedFile *file);

    fst_type type() const { return type_; }
    int64_t size() const { return n_; }
    int64_t capacity() const { return capacity_; }   // 0 = unbounded
    bool bounded() const { return capacity_ > 0; }
    int64_t room() const { return capacity_ - n_; } // bounded tiers only
    int64_t start() const { return start_; }        // ring slot of the oldest token
    size_t bytes() const;                           // allocated K and V bytes
    size_t row_bytes_k() const { return row_k_; }
    size_t row_bytes_v() const { return row_v_; }

    // Makes slots for `tokens` tokens in total exist (unbounded tiers; bounded ones have them all already).
    void reserve(int64_t tokens);
    // Row of head h of the i-th oldest token; i may reach past size() into reserved slots (to write them).
    unsigned char *k_row(int64_t i, int64_t h) const;
    unsigned char *v_row(int64_t i, int64_t h) const;
    void push_back(int64_t m) { n_ += m; }   // the m rows after the last were written
    void pop_front(int64_t m);               // bounded tiers only
    void restore(int64_t start, int64_t n);  // persistence: a validated ring start and count

    // The held tokens as runs of consecutive slots, oldest first: fn(extent, first slot, first token, count).
    template <class Fn> void for_each_run(Fn &&fn) const {
        int64_t i = 0;
        while (i < n_) {
            auto [e, idx] = locate(i);
            const int64_t count = std::min(n_ - i, e->capacity - idx);
            fn(*e, idx, i, count);
            i += count;
        }
    }
    int64_t max_runs() const { return bounded() ? 2 : int64_t(extents_.size()); }

private:
    std::pair<const Extent *, int64_t> locate(int64_t i) const; // extent and slot of the i-th oldest token
    void add_extent(int64_t tokens);

    fst_type type_;
    int64_t n_head_kv_;
    size_t row_k_, row_v_;
    int64_t capacity_, log_base_;
    MappedFile *file_;
    std::vector<Extent> extents_;
    std::vector<RamBlock> ram_;
    int64_t start_ = 0, n_ = 0;
};

} // namespace fst
