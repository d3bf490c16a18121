// Validation of the attention entry points' arguments: every tensor, extent, stride, alias and parameter is checked
// before anything is written (SPEC section 5).
#pragma once

#include "state/state.h"

#include <vector>

namespace fst {

// One validated KV segment.
struct Segment {
    fst_tensor k{}, v{}, mask{}, kv_pos{};
    bool has_mask = false, has_kv_pos = false;
    int64_t n_kv = 0, kv_pos0 = 0;
    // Paged K/V (fst_attn_paged): k and v are the pages [D, 2^page_shift, n_head_kv, n_pages]; key j of KV sequence
    // s is row j mod 2^page_shift of page page_table[j >> page_shift, s] (see tile.cpp's chunk_rows).
    bool paged = false;
    int page_shift = 0;
    fst_tensor page_table{};
};

struct AttnProblem {
    int64_t D = 0, DV = 0, n_q = 0, n_head = 0, n_head_kv = 0, n_seq = 0, n_seq_kv = 0;
    fst_attn_params params{};
    fst_tensor q{}, state{}, out{}, sinks{}, q_pos{};
    bool has_sinks = false, has_q_pos = false;
    std::vector<Segment> segments;
};

// Fills P (reusing its storage: no allocation in steady state). The segments come as fst_segment records; a
// single-segment call passes its k, v, mask and params' kv_pos0 / kv_pos.
void validate_attention(AttnProblem &P, const fst_attn_params *p, const fst_tensor *q, const fst_segment *segments,
                        int64_t n_segments, const fst_tensor *sinks, const fst_tensor *state, const fst_tensor *out);

// The same for fst_attn_paged: one segment over the pages.
void validate_paged_attention(AttnProblem &P, const fst_attn_params *p, const fst_tensor *q, const fst_paged_kv *kv,
                              const fst_tensor *mask, const fst_tensor *sinks, const fst_tensor *state, const fst_tensor *out);

} // namespace fst
