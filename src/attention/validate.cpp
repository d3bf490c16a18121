#include "attention/validate.h"

#include "common/error.h"
#include "tensor/types.h"

#include <cmath>
#include <string>

namespace fst {

namespace {

constexpr unsigned kDim1MayBeEmpty = 1u << 1; // k, v: n_kv == 0 is a valid (empty) segment
constexpr unsigned kDim0MayBeEmpty = 1u << 0; // mask and kv_pos: ne[0] == n_kv

std::string fstr(float x) { return std::to_string(x); }

void check_params(const fst_attn_params *p) {
    if (p == nullptr) fail("params", "pointer", "NULL", "a fst_attn_params (see fst_attn_default_params)");
    if (!std::isfinite(p->scale)) fail("params", "scale", fstr(p->scale), "a finite number");
    if (!std::isfinite(p->max_bias) || p->max_bias < 0) fail("params", "max_bias", fstr(p->max_bias), "finite and >= 0");
    if (!std::isfinite(p->softcap) || p->softcap < 0) fail("params", "softcap", fstr(p->softcap), "finite and >= 0 (0 = off)");
    if (p->virtual_mask != FST_MASK_NONE && p->virtual_mask != FST_MASK_CAUSAL && p->virtual_mask != FST_MASK_SLIDING_WINDOW)
        fail("params", "virtual_mask", int64_t(p->virtual_mask), "FST_MASK_NONE (0), FST_MASK_CAUSAL (1) or FST_MASK_SLIDING_WINDOW (2)");
    if (p->virtual_mask == FST_MASK_SLIDING_WINDOW && p->window < 1)
        fail("params", "window", p->window, ">= 1 with FST_MASK_SLIDING_WINDOW");
    if (p->n_threads < 0) fail("params", "n_threads", int64_t(p->n_threads), ">= 0 (0 = every hardware thread)");
    if (p->isa < FST_ISA_AUTO || p->isa > FST_ISA_AVX512)
        fail("params", "isa", int64_t(p->isa), "FST_ISA_AUTO (0), PORTABLE (1), AVX2 (2) or AVX512 (3)");
    if (p->precision != FST_PRECISION_EXACT) fail("params", "precision", int64_t(p->precision), "FST_PRECISION_EXACT (0)");
    // Positions are int64; keep them far from overflow when an index is added.
    const int64_t lim = int64_t(1) << 62;
    if (p->q_pos0 < -lim || p->q_pos0 > lim) fail("params", "q_pos0", p->q_pos0, "within +-2^62");
    if (p->kv_pos0 < -lim || p->kv_pos0 > lim) fail("params", "kv_pos0", p->kv_pos0, "within +-2^62");
}

// Positions: I32 [n, m] with n_seq % m == 0.
ByteRange check_positions(const char *name, const fst_tensor *t, int64_t n, const char *n_name, int64_t n_seq,
                          unsigned may_be_empty) {
    ByteRange r = check_view(name, t, {FST_TYPE_I32}, may_be_empty);
    expect_extent(name, t, 0, n, n_name);
    if (n_seq % t->ne[1] != 0) fail(name, "ne[1]", t->ne[1], "a divisor of n_seq = " + std::to_string(n_seq));
    expect_extent(name, t, 2, 1, std::string(name) + " is [" + n_name + ", m]");
    expect_extent(name, t, 3, 1, std::string(name) + " is [" + n_name + ", m]");
    return r;
}

} // namespace

AttnProblem validate_attention(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k,
                               const fst_tensor *v, const fst_tensor *mask, const fst_tensor *sinks,
                               const fst_tensor *state, const fst_tensor *out) {
    check_params(p);
    const std::initializer_list<fst_type> kv_types = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0};
    AttnProblem P;
    P.params = *p;
    const ByteRange qb = check_view("q", q, {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16});
    const ByteRange kb = check_view("k", k, kv_types, kDim1MayBeEmpty);
    const ByteRange vb = check_view("v", v, kv_types, kDim1MayBeEmpty);
    P.D = q->ne[0];
    P.n_q = q->ne[1];
    P.n_head = q->ne[2];
    P.n_seq = q->ne[3];
    expect_extent("k", k, 0, P.D, "q.ne[0], D");
    P.n_kv = k->ne[1];
    P.n_head_kv = k->ne[2];
    P.n_seq_kv = k->ne[3];
    if (P.n_head % P.n_head_kv != 0)
        fail("k", "ne[2]", P.n_head_kv, "a divisor of n_head = q.ne[2] = " + std::to_string(P.n_head) + " (GQA)");
    if (P.n_seq % P.n_seq_kv != 0)
        fail("k", "ne[3]", P.n_seq_kv, "a divisor of n_seq = q.ne[3] = " + std::to_string(P.n_seq));
    expect_extent("v", v, 1, P.n_kv, "k.ne[1], n_kv");
    expect_extent("v", v, 2, P.n_head_kv, "k.ne[2], n_head_kv");
    expect_extent("v", v, 3, P.n_seq_kv, "k.ne[3], n_seq_kv");
    P.DV = v->ne[0];

    const StatePair sp = check_state_pair(state, out);
    expect_extent("out", out, 0, P.DV, "v.ne[0], DV");
    expect_extent("state", state, 1, P.n_head, "q.ne[2], n_head");
    expect_extent("state", state, 2, P.n_q, "q.ne[1], n_q");
    expect_extent("state", state, 3, P.n_seq, "q.ne[3], n_seq");

    ByteRange inputs[6] = {qb, kb, vb, {}, {}, {}};
    const char *input_names[6] = {"q", "k", "v", "mask", "sinks", "positions"};
    if (mask != nullptr) {
        inputs[3] = check_view("mask", mask, {FST_TYPE_F16, FST_TYPE_F32}, kDim0MayBeEmpty);
        expect_extent("mask", mask, 0, P.n_kv, "k.ne[1], n_kv of this segment");
        if (mask->ne[1] < P.n_q)
            fail("mask", "ne[1]", mask->ne[1], ">= " + std::to_string(P.n_q) + " (q.ne[1], n_q: one row per query row)");
        if (P.n_head % mask->ne[2] != 0)
            fail("mask", "ne[2]", mask->ne[2], "a divisor of n_head = " + std::to_string(P.n_head) + " (broadcast over heads)");
        if (P.n_seq % mask->ne[3] != 0)
            fail("mask", "ne[3]", mask->ne[3], "a divisor of n_seq = " + std::to_string(P.n_seq) + " (broadcast over sequences)");
        P.mask = *mask;
        P.has_mask = true;
    }
    if (sinks != nullptr) {
        inputs[4] = check_view("sinks", sinks, {FST_TYPE_F32});
        expect_extent("sinks", sinks, 0, P.n_head, "q.ne[2], n_head");
        for (int i = 1; i < 4; ++i) expect_extent("sinks", sinks, i, 1, "sinks is [n_head]");
        P.sinks = *sinks;
        P.has_sinks = true;
    }
    ByteRange pos_ranges[2];
    if (p->q_pos != nullptr) {
        pos_ranges[0] = check_positions("q_pos", p->q_pos, P.n_q, "n_q", P.n_seq, 0);
        P.q_pos = *p->q_pos;
        P.has_q_pos = true;
    }
    if (p->kv_pos != nullptr) {
        pos_ranges[1] = check_positions("kv_pos", p->kv_pos, P.n_kv, "n_kv", P.n_seq, kDim0MayBeEmpty);
        P.kv_pos = *p->kv_pos;
        P.has_kv_pos = true;
    }

    // state and out are written: they must not overlap anything that is read.
    for (int i = 0; i < 5; ++i) {
        expect_disjoint("out", sp.out_bytes, input_names[i], inputs[i]);
        expect_disjoint("state", sp.state_bytes, input_names[i], inputs[i]);
    }
    const char *pos_names[2] = {"q_pos", "kv_pos"};
    for (int i = 0; i < 2; ++i) {
        expect_disjoint("out", sp.out_bytes, pos_names[i], pos_ranges[i]);
        expect_disjoint("state", sp.state_bytes, pos_names[i], pos_ranges[i]);
    }
    P.q = *q;
    P.k = *k;
    P.v = *v;
    P.state = *state;
    P.out = *out;
    return P;
}

} // namespace fst
