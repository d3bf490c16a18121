// Validation of fst_attn_with_state's arguments: every tensor, extent, stride, alias and parameter is checked
// before anything is written (SPEC section 5).
#pragma once

#include "state/state.h"

namespace fst {

struct AttnProblem {
    int64_t D = 0, DV = 0, n_q = 0, n_kv = 0, n_head = 0, n_head_kv = 0, n_seq = 0, n_seq_kv = 0;
    fst_attn_params params{};
    fst_tensor q{}, k{}, v{}, state{}, out{};
    fst_tensor mask{}, sinks{}, q_pos{}, kv_pos{}; // valid only when the matching has_* is set
    bool has_mask = false, has_sinks = false, has_q_pos = false, has_kv_pos = false;
};

AttnProblem validate_attention(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k,
                               const fst_tensor *v, const fst_tensor *mask, const fst_tensor *sinks,
                               const fst_tensor *state, const fst_tensor *out);

} // namespace fst
