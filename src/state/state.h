// Validation and row access for a (state, out) pair: state F32 [2, n_head, n_q, n_seq] holds (M, S) per row,
// out F32 [DV, n_head, n_q, n_seq] holds the normalized O.
#pragma once

#include "tensor/view.h"

namespace fst {

struct StatePair {
    ByteRange state_bytes, out_bytes;
    int64_t dv = 0, n_head = 0, n_q = 0, n_seq = 0;
};

// Checks both views and that they agree; names them state_name / out_name in messages.
StatePair check_state_pair(const fst_tensor *state, const fst_tensor *out, const char *state_name = "state",
                           const char *out_name = "out");

inline float *state_row(const fst_tensor &state, int64_t h, int64_t r, int64_t s) {
    return reinterpret_cast<float *>(at_mut(state, h, r, s)); // [0] = M, [1] = S
}
inline float *out_row(const fst_tensor &out, int64_t h, int64_t r, int64_t s) {
    return reinterpret_cast<float *>(at_mut(out, h, r, s));
}

} // namespace fst
