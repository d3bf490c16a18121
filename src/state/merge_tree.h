// Pairwise reduction of a sequence of partial states with ⊕, in the shape of a binary counter: slot k holds the
// merge of 2^k consecutive partials. Rounding error then grows with log2(count), not with count, so long KV
// ranges stay within SPEC section 4's bound. The tree's shape depends only on the number of partials.
#pragma once

#include "state/merge.h"

#include <algorithm>
#include <cstdint>

namespace fst {

class MergeTree {
public:
    // `storage` holds (levels + 1) slots of (dv + 2) floats: [M, S, O...].
    MergeTree() = default;
    MergeTree(float *storage, int levels, int64_t dv) : slots_(storage), levels_(levels), dv_(dv) {}

    // The slot to fill with the next partial before push().
    float *incoming() { return slot(levels_); }

    void push() {
        float *carry = incoming();
        int k = 0;
        for (; (count_ >> k) & 1u; ++k) {
            float *older = slot(k);
            merge_state(older[0], older[1], older + 2, carry[0], carry[1], carry + 2, dv_);
            carry = older;
        }
        if (carry != slot(k)) std::copy(carry, carry + dv_ + 2, slot(k));
        ++count_;
    }

    // Merges everything pushed, oldest first, into (M, S, O); leaves O untouched and S = 0 when empty.
    void result(float &M, float &S, float *O) {
        M = kNegInf;
        S = 0.0f;
        for (int k = levels_ - 1; k >= 0; --k)
            if ((count_ >> k) & 1u) {
                const float *p = slot(k);
                merge_state(M, S, O, p[0], p[1], p + 2, dv_);
            }
    }

private:
    float *slot(int k) { return slots_ + int64_t(k) * (dv_ + 2); }
    float *slots_ = nullptr;
    int levels_ = 0;
    int64_t dv_ = 0;
    uint64_t count_ = 0;
};

} // namespace fst
