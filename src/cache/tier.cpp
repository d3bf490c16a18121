#include "cache/tier.h"

#include "common/error.h"
#include "tensor/types.h"

#include <algorithm>
#include <bit>
#include <string>

namespace fst {

namespace {
size_t row_bytes(fst_type t, int64_t n) { return block_bytes(t) * size_t(n / block_elems(t)); }
size_t align64(size_t n) { return (n + 63) / 64 * 64; }
} // namespace

Tier::Tier(fst_type type, int64_t D, int64_t DV, int64_t n_head_kv, int64_t capacity, int64_t log_base,
           MappedFile *file)
    : type_(type), n_head_kv_(n_head_kv), row_k_(row_bytes(type, D)), row_v_(row_bytes(type, DV)),
      capacity_(capacity), log_base_(log_base), file_(file) {
    if (capacity_ > 0) add_extent(capacity_);
}

void Tier::add_extent(int64_t tokens) {
    // The same bound as the config's rings (validate_config), checked in floating point so that it cannot wrap.
    const double total = double(row_k_ + row_v_) * double(tokens) * double(n_head_kv_);
    if (!(total <= double(int64_t(1) << 46)))
        fail_message("a cache tier of " + std::to_string(tokens) + " more tokens would exceed 2^46 bytes of K and V "
                     "per layer", FST_ERR_OUT_OF_MEMORY);
    Extent e;
    e.capacity = tokens;
    const size_t k_bytes = align64(row_k_ * size_t(tokens) * size_t(n_head_kv_));
    const size_t v_bytes = row_v_ * size_t(tokens) * size_t(n_head_kv_);
    e.bytes = k_bytes + v_bytes;
    if (file_) {
        e.k = file_->map(e.bytes);
    } else {
        ram_.push_back(allocate_ram(e.bytes));
        e.k = ram_.back().get();
    }
    e.v = e.k + k_bytes;
    extents_.push_back(e);
}

size_t Tier::bytes() const {
    size_t total = 0;
    for (const Extent &e : extents_) total += e.bytes;
    return total;
}

void Tier::reserve(int64_t tokens) {
    if (bounded()) return;
    int64_t have = 0;
    for (const Extent &e : extents_) have += e.capacity;
    while (have < tokens) {
        const int64_t next = log_base_ << extents_.size();
        add_extent(next);
        have += next;
    }
}

std::pair<const Extent *, int64_t> Tier::locate(int64_t i) const {
    if (bounded()) return {&extents_[0], (start_ + i) % capacity_};
    // Extent e holds tokens [base (2^e - 1), base (2^(e+1) - 1)).
    const uint64_t q = uint64_t(i / log_base_) + 1;
    const int e = std::bit_width(q) - 1;
    return {&extents_[size_t(e)], i - log_base_ * ((int64_t(1) << e) - 1)};
}

unsigned char *Tier::k_row(int64_t i, int64_t h) const {
    auto [e, idx] = locate(i);
    return e->k + (size_t(h) * size_t(e->capacity) + size_t(idx)) * row_k_;
}

unsigned char *Tier::v_row(int64_t i, int64_t h) const {
    auto [e, idx] = locate(i);
    return e->v + (size_t(h) * size_t(e->capacity) + size_t(idx)) * row_v_;
}

void Tier::pop_front(int64_t m) {
    start_ = (start_ + m) % capacity_;
    n_ -= m;
}

void Tier::restore(int64_t start, int64_t n) {
    start_ = start;
    n_ = n;
}

} // namespace fst
