// Random attention problems for the property tests. A Spec says what to build (every choice explicit, so a test
// can force a feature on); a Problem owns the buffers and hands out fst_tensor views, the parameters, and views
// of KV segments. Everything is drawn from a seeded std::mt19937, so a seed names a problem.
#pragma once

#include "reference/reference.h"
#include "support/buffer.h"

#include <flashstate/flashstate.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace fst_test {

struct Spec {
    int64_t D = 64, DV = 64, n_q = 1, n_kv = 16, n_head = 1, n_head_kv = 1, n_seq = 1, n_seq_kv = 1;
    fst_type q_type = FST_TYPE_F32, k_type = FST_TYPE_F32, v_type = FST_TYPE_F32;
    bool padded = false;                        // pad bytes between rows, heads and sequences of every tensor
    bool permute_k = false, permute_v = false;  // stored [D, n_head_kv, n_kv, n_seq_kv]; the view swaps dims 1, 2

    bool has_mask = false;
    fst_type mask_type = FST_TYPE_F16;
    int64_t mask_rows = 0;          // mask ne[1]; 0 means n_q (more rows than n_q are padding nobody reads)
    int64_t m2 = 1, m3 = 1;         // mask broadcast over heads and sequences
    double mask_inf_fraction = 0;   // share of random -inf entries
    int n_fully_masked_rows = 0;    // mask rows (of random slices) that are -inf everywhere

    float max_bias = 0, softcap = 0;
    bool has_sinks = false;

    fst_virtual_mask virtual_mask = FST_MASK_NONE;
    int64_t window = 0;
    int64_t q_pos0 = 0, kv_pos0 = 0;
    bool q_pos_tensor = false, kv_pos_tensor = false;  // explicit I32 positions (with gaps) instead of pos0 + index
    int64_t pos_columns = 1;                           // ne[1] of the position tensors (n_seq % pos_columns == 0)

    double logit_max = 10;  // the scale is chosen so that max |scale * dot(q, k)| equals this
    float v_mean = 0;       // V ~ N(v_mean, 1); Q, K ~ N(0, 1)
};

bool is_quantized(fst_type t);
const std::vector<fst_type> &kv_types();  // F32, F16, BF16, Q8_0, Q4_0

// Everything random (K and V types too); the overload fixes the K and V types.
Spec random_spec(std::mt19937 &rng);
Spec random_spec(std::mt19937 &rng, fst_type k_type, fst_type v_type);
std::string describe(const Spec &s);  // one line, for failure messages
// A decode of 2 query rows per KV head over 32 KV heads (D = DV = 32, K and V of type t, a mask tensor hiding
// mask_inf_fraction of the keys, n_kv keys): enough KV heads that the planner does not cut the keys into pieces for
// the threads, so row groups take several chunks or short segments per kernel call (attention/tile.cpp's spans).
Spec spans_decode_spec(fst_type t, int64_t n_kv, double mask_inf_fraction);
// Repairs a Spec after a test changed some fields: broadcast divisibility (heads, sequences, mask, positions),
// mask rows, and the size budget that keeps the reference quick.
void make_consistent(Spec &s);

// One KV range [j0, j0 + n) of a problem: K/V sliced along dim 1, the mask's columns (dim 0), kv_pos's entries
// (dim 0) or kv_pos0 + j0. params() points kv_pos at this object's own view, so call it on the object you keep.
struct Segment {
    int64_t j0 = 0, n = 0;
    fst_tensor k{}, v{}, mask{}, kv_pos{};
    bool has_mask = false, has_kv_pos = false;
    fst_attn_params p{};
    const fst_tensor *mask_ptr() const { return has_mask ? &mask : nullptr; }
    fst_attn_params params() const {
        fst_attn_params r = p;
        r.kv_pos = has_kv_pos ? &kv_pos : nullptr;
        return r;
    }
};

// A problem owns its buffers; views and parameters returned by it point into it, so it is neither copied nor
// moved. Buffers are public so that a test can overwrite entries (set_mask) after construction.
class Problem {
public:
    Problem(const Spec &spec, uint32_t seed);
    Problem(const Problem &) = delete;
    Problem &operator=(const Problem &) = delete;

    Spec spec;
    float scale = 1;
    Buffer q_buf, k_buf, v_buf, mask_buf, sinks_buf, q_pos_buf, kv_pos_buf;

    fst_tensor q() const { return q_buf.t; }
    fst_tensor k() const;  // permuted views are rebuilt from the buffer
    fst_tensor v() const;
    const fst_tensor *mask() const { return spec.has_mask ? &mask_buf.t : nullptr; }
    const fst_tensor *sinks() const { return spec.has_sinks ? &sinks_buf.t : nullptr; }
    fst_attn_params params() const;  // n_threads 1; whole KV range

    Buffer make_state() const;  // [2, n_head, n_q, n_seq] F32, padded when spec.padded; all zero bytes
    Buffer make_out() const;    // [DV, n_head, n_q, n_seq] F32, likewise

    Segment segment(int64_t j0, int64_t n) const;
    ref::Result reference(bool with_sinks = true) const;        // ref::attention over the whole range
    ref::Result reference(const Segment &g, bool with_sinks) const;  // over one segment

    void set_mask(int64_t j, int64_t r, int64_t i2, int64_t i3, float value);  // stored in the mask's type
};

// A cover of [0, n_kv) by n_segments consecutive ranges {j0, n}; some may be empty when n_segments > 1.
using Range = std::pair<int64_t, int64_t>;
std::vector<Range> random_split(std::mt19937 &rng, int64_t n_kv, int64_t n_segments);

// Row (h, r, s) of a state tensor: M and S.
float state_m(const fst_tensor &state, int64_t h, int64_t r, int64_t s);
float state_s(const fst_tensor &state, int64_t h, int64_t r, int64_t s);
float out_value(const fst_tensor &out, int64_t c, int64_t h, int64_t r, int64_t s);

// SPEC section 4 between two F32 out views: max |a - b| / max(1e-6, max |b|).
double rel_diff(const fst_tensor &a, const fst_tensor &b);
// max |a - b| / max(1e-6, norm) over two F32 views of the same extents (any strides); inf if anything is NaN.
double rel_diff(const fst_tensor &a, const fst_tensor &b, double norm);
// max |x| over an F32 view.
double max_abs(const fst_tensor &t);

// State errors: m = max |M - M_ref| / max(1, |M_ref|); s = max |S exp(M - M_ref) - S_ref| / S_ref (our S is
// relative to our M). A row empty on one side only (S == 0 there, not on the other) counts as an infinite error;
// so does an empty row whose M is not -inf.
struct StateError {
    double m = 0, s = 0;
};
StateError state_error(const fst_tensor &state, const ref::Result &ref);
StateError state_diff(const fst_tensor &state, const fst_tensor &expected);

// Which bytes of the buffer a view covers (to check that padding is never written).
std::vector<bool> covered_bytes(const Buffer &b);

} // namespace fst_test
