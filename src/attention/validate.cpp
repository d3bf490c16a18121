#include "attention/validate.h"

#include "common/error.h"
#include "tensor/types.h"

#include <bit>
#include <cmath>
#include <charconv>
#include <cstring>
#include <string>
#include <vector>

namespace fst {

namespace {

constexpr unsigned kDim1MayBeEmpty = 1u << 1; // k, v: n_kv == 0 is a valid (empty) segment
constexpr unsigned kDim0MayBeEmpty = 1u << 0; // mask and kv_pos: ne[0] == n_kv
constexpr int64_t kPosLimit = int64_t(1) << 60;

std::string fstr(float x) { return std::to_string(x); }

void check_params(const fst_attn_params *p) {
    if (p == nullptr) fail("params", "pointer", "NULL", "a fst_attn_params (see fst_attn_default_params)");
    if (!std::isfinite(p->scale)) fail("params", "scale", fstr(p->scale), "a finite number");
    if (!std::isfinite(p->max_bias) || p->max_bias < 0) fail("params", "max_bias", fstr(p->max_bias), "finite and >= 0");
    if (!std::isfinite(p->softcap) || p->softcap < 0) fail("params", "softcap", fstr(p->softcap), "finite and >= 0 (0 = off)");
    const int vmask = enum_value(p->virtual_mask), isa = enum_value(p->isa), precision = enum_value(p->precision);
    if (vmask != FST_MASK_NONE && vmask != FST_MASK_CAUSAL && vmask != FST_MASK_SLIDING_WINDOW)
        fail("params", "virtual_mask", int64_t(vmask), "FST_MASK_NONE (0), FST_MASK_CAUSAL (1) or FST_MASK_SLIDING_WINDOW (2)");
    if (p->virtual_mask == FST_MASK_SLIDING_WINDOW && p->window < 1)
        fail("params", "window", p->window, ">= 1 with FST_MASK_SLIDING_WINDOW");
    if (p->n_threads < 0) fail("params", "n_threads", int64_t(p->n_threads), ">= 0 (0 = every hardware thread)");
    if (isa < FST_ISA_AUTO || isa > FST_ISA_AVX512)
        fail("params", "isa", int64_t(isa), "FST_ISA_AUTO (0), PORTABLE (1), AVX2 (2) or AVX512 (3)");
    if (precision != FST_PRECISION_EXACT) fail("params", "precision", int64_t(precision), "FST_PRECISION_EXACT (0)");
    // Positions are int64; keeping them within +-2^60 leaves room for every difference and index added to them.
    if (p->q_pos0 < -kPosLimit || p->q_pos0 > kPosLimit) fail("params", "q_pos0", p->q_pos0, "within +-2^60");
    if (p->window > kPosLimit) fail("params", "window", p->window, "<= 2^60");
}

// Positions: I32 [n, m] with n_seq % m == 0.
ByteRange check_positions(const char *name, const fst_tensor *t, int64_t n, const char *n_name, int64_t n_seq,
                          unsigned may_be_empty) {
    ByteRange r = check_view(name, t, {FST_TYPE_I32}, may_be_empty);
    expect_extent(name, t, 0, n, n_name);
    if (n_seq % t->ne[1] != 0) fail(name, "ne[1]", t->ne[1], "a divisor of n_seq = " + std::to_string(n_seq));
    expect_extent(name, t, 2, 1, "positions are [n, m]");
    expect_extent(name, t, 3, 1, "positions are [n, m]");
    return r;
}



// Every input is checked not to overlap state and out (they are written).
struct Outputs {
    ByteRange state_bytes, out_bytes;
    void input(const char *name, ByteRange r) const {
        expect_disjoint("out", out_bytes, name, r);
        expect_disjoint("state", state_bytes, name, r);
    }
};

// What every entry checks first: params, q, state and out (P's shapes from q and out).
Outputs start_problem(AttnProblem &P, const fst_attn_params *p, const fst_tensor *q, const fst_tensor *state,
                      const fst_tensor *out) {
    // Nothing here allocates unless a check fails (P.segments keeps its capacity between calls).
    check_params(p);
    P.params = *p;
    P.segments.clear();
    P.has_sinks = P.has_q_pos = false;
    const ByteRange qb = check_view("q", q, {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16});
    P.D = q->ne[0];
    P.n_q = q->ne[1];
    P.n_head = q->ne[2];
    P.n_seq = q->ne[3];
    const StatePair sp = check_state_pair(state, out);
    expect_extent("state", state, 1, P.n_head, "q.ne[2], n_head");
    expect_extent("state", state, 2, P.n_q, "q.ne[1], n_q");
    expect_extent("state", state, 3, P.n_seq, "q.ne[3], n_seq");
    const Outputs o{sp.state_bytes, sp.out_bytes};
    o.input("q", qb);
    P.DV = out->ne[0];
    P.n_head_kv = P.n_seq_kv = 1; // with no segment only sinks (if any) are merged; any GQA shape fits
    return o;
}

// The KV head and sequence counts from the first K/V tensor (n_head_kv from its ne[2]; n_seq_kv as given).
void set_kv_shape(AttnProblem &P, const char *kn, const fst_tensor *k, int64_t n_seq_kv, const char *n_seq_kv_name,
                  int n_seq_kv_dim) {
    P.n_head_kv = k->ne[2];
    P.n_seq_kv = n_seq_kv;
    if (P.n_head % P.n_head_kv != 0)
        fail(kn, "ne[2]", P.n_head_kv, "a divisor of n_head = q.ne[2] = " + std::to_string(P.n_head) + " (GQA)");
    if (P.n_seq % P.n_seq_kv != 0)
        fail(n_seq_kv_name, "ne[" + std::to_string(n_seq_kv_dim) + "]", P.n_seq_kv,
             "a divisor of n_seq = q.ne[3] = " + std::to_string(P.n_seq));
}

// A segment's mask, positions and kv_pos0, once S.n_kv is known. n_kv_what names where n_kv comes from.
void check_segment_masks(const AttnProblem &P, Segment &S, const Outputs &o, const fst_tensor *mask, const fst_tensor *kv_pos,
                         int64_t kv_pos0, const char *mn, const char *pn, const char *n_kv_what, const char *n_kv_owner,
                         const char *kv_pos0_owner_prefix, const char *kv_pos0_owner) {
    if (mask != nullptr) {
        o.input(mn, check_view(mn, mask, {FST_TYPE_F16, FST_TYPE_F32}, kDim0MayBeEmpty));
        expect_extent(mn, mask, 0, S.n_kv, n_kv_what, n_kv_owner);
        if (mask->ne[1] < P.n_q)
            fail(mn, "ne[1]", mask->ne[1], ">= " + std::to_string(P.n_q) + " (q.ne[1], n_q: one row per query row)");
        if (P.n_head % mask->ne[2] != 0)
            fail(mn, "ne[2]", mask->ne[2], "a divisor of n_head = " + std::to_string(P.n_head) + " (broadcast over heads)");
        if (P.n_seq % mask->ne[3] != 0)
            fail(mn, "ne[3]", mask->ne[3], "a divisor of n_seq = " + std::to_string(P.n_seq) + " (broadcast over sequences)");
        S.mask = *mask;
        S.has_mask = true;
    }
    if (kv_pos != nullptr) {
        o.input(pn, check_positions(pn, kv_pos, S.n_kv, "n_kv", P.n_seq, kDim0MayBeEmpty));
        S.kv_pos = *kv_pos;
        S.has_kv_pos = true;
    }
    if (kv_pos0 < -kPosLimit || kv_pos0 > kPosLimit)
        fail(std::string(kv_pos0_owner_prefix) + kv_pos0_owner, "kv_pos0", kv_pos0, "within +-2^60");
    S.kv_pos0 = kv_pos0;
}

// What every entry checks last: sinks, query positions; then P takes q, state and out.
void finish_problem(AttnProblem &P, const Outputs &o, const fst_attn_params *p, const fst_tensor *q,
                    const fst_tensor *sinks, const fst_tensor *state, const fst_tensor *out) {
    if (sinks != nullptr) {
        o.input("sinks", check_view("sinks", sinks, {FST_TYPE_F32}));
        expect_extent("sinks", sinks, 0, P.n_head, "q.ne[2], n_head");
        for (int i = 1; i < 4; ++i) expect_extent("sinks", sinks, i, 1, "sinks is [n_head]");
        P.sinks = *sinks;
        P.has_sinks = true;
    }
    if (p->q_pos != nullptr) {
        o.input("q_pos", check_positions("q_pos", p->q_pos, P.n_q, "n_q", P.n_seq, 0));
        P.q_pos = *p->q_pos;
        P.has_q_pos = true;
    }
    P.q = *q;
    P.state = *state;
    P.out = *out;
}

const std::initializer_list<fst_type> kKvTypes = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0};

} // namespace

void validate_attention(AttnProblem &P, const fst_attn_params *p, const fst_tensor *q, const fst_segment *segments,
                        int64_t n_segments, const fst_tensor *sinks, const fst_tensor *state, const fst_tensor *out) {
    const Outputs o = start_problem(P, p, q, state, out);
    if (n_segments < 0) fail("segments", "count", n_segments, ">= 0");
    if (n_segments > 0 && segments == nullptr) fail("segments", "pointer", "NULL", "an array of " + std::to_string(n_segments));
    if (size_t(n_segments) > P.segments.capacity()) P.segments.reserve(size_t(n_segments));
    for (int64_t i = 0; i < n_segments; ++i) {
        const fst_segment &g = segments[i];
        // A single-segment call keeps the plain names (k, v, mask, kv_pos); otherwise name the segment.
        // (Built without snprintf: five of those per segment were ~3 % of a call over 256 segments of 16 keys.)
        char pre[40] = "", kn[48], vn[48], mn[48], pn[48];
        if (n_segments > 1) {
            char *e = pre + std::strlen(std::strcpy(pre, "segments["));
            e = std::to_chars(e, pre + sizeof pre - 3, i).ptr;
            std::strcpy(e, "].");
        }
        auto name = [&](char *dst, const char *field) { std::strcat(std::strcpy(dst, pre), field); };
        name(kn, "k");
        name(vn, "v");
        name(mn, "mask");
        name(pn, "kv_pos");
        o.input(kn, check_view(kn, g.k, kKvTypes, kDim1MayBeEmpty));
        o.input(vn, check_view(vn, g.v, kKvTypes, kDim1MayBeEmpty));
        const fst_tensor *k = g.k, *v = g.v;
        expect_extent(kn, k, 0, P.D, "q.ne[0], D");
        if (i == 0) {
            set_kv_shape(P, kn, k, k->ne[3], kn, 3);
            expect_extent("out", out, 0, v->ne[0], ".ne[0], DV", vn);
        } else {
            expect_extent(kn, k, 2, P.n_head_kv, "segments[0].k.ne[2], n_head_kv");
            expect_extent(kn, k, 3, P.n_seq_kv, "segments[0].k.ne[3], n_seq_kv");
            expect_extent(vn, v, 0, P.DV, "segments[0].v.ne[0], DV");
        }
        Segment S;
        S.n_kv = k->ne[1];
        expect_extent(vn, v, 1, S.n_kv, ".ne[1], n_kv", kn);
        expect_extent(vn, v, 2, P.n_head_kv, ".ne[2], n_head_kv", kn);
        expect_extent(vn, v, 3, P.n_seq_kv, ".ne[3], n_seq_kv", kn);
        check_segment_masks(P, S, o, g.mask, g.kv_pos, g.kv_pos0, mn, pn, ".ne[1], n_kv of this segment", kn,
                            pre, n_segments > 1 ? "segment" : "params");
        S.k = *k;
        S.v = *v;
        P.segments.push_back(S);
    }
    finish_problem(P, o, p, q, sinks, state, out);
}

void validate_paged_attention(AttnProblem &P, const fst_attn_params *p, const fst_tensor *q, const fst_paged_kv *kv,
                              const fst_tensor *mask, const fst_tensor *sinks, const fst_tensor *state, const fst_tensor *out) {
    const Outputs o = start_problem(P, p, q, state, out);
    if (kv == nullptr) fail("kv", "pointer", "NULL", "a fst_paged_kv");
    constexpr unsigned kNoPages = 1u << 3; // a pool of no pages serves n_kv == 0
    o.input("kv.k", check_view("kv.k", kv->k, kKvTypes, kNoPages));
    o.input("kv.v", check_view("kv.v", kv->v, kKvTypes, kNoPages));
    const fst_tensor *k = kv->k, *v = kv->v, *table = kv->page_table;
    expect_extent("kv.k", k, 0, P.D, "q.ne[0], D");
    const int64_t page_keys = k->ne[1], n_pages = k->ne[3];
    if (!std::has_single_bit(uint64_t(page_keys))) fail("kv.k", "ne[1]", page_keys, "a power of two (keys per page)");
    expect_extent("out", out, 0, v->ne[0], ".ne[0], DV", "kv.v");
    expect_extent("kv.v", v, 1, page_keys, ".ne[1], keys per page", "kv.k");
    expect_extent("kv.v", v, 2, k->ne[2], ".ne[2], n_head_kv", "kv.k");
    expect_extent("kv.v", v, 3, n_pages, ".ne[3], pages", "kv.k");
    // At most what a contiguous K view can hold (rows of 2 bytes or more within a span below 2^63): the bound every
    // count derived from n_kv (pages, chunks, positions) is computed within.
    constexpr int64_t kMaxKeys = int64_t(1) << 62;
    if (kv->n_kv < 0 || kv->n_kv >= kMaxKeys) fail("kv", "n_kv", kv->n_kv, ">= 0 and < 2^62");
    o.input("kv.page_table", check_view("kv.page_table", table, {FST_TYPE_I32}, kDim0MayBeEmpty));
    set_kv_shape(P, "kv.k", k, table->ne[1], "kv.page_table", 1);
    const int64_t pages_used = kv->n_kv / page_keys + (kv->n_kv % page_keys != 0);
    if (table->ne[0] < pages_used)
        fail("kv.page_table", "ne[0]", table->ne[0],
             ">= " + std::to_string(pages_used) + " = ceil(kv.n_kv / keys per page) = ceil(" + std::to_string(kv->n_kv) +
                 " / " + std::to_string(page_keys) + ")");
    expect_extent("kv.page_table", table, 2, 1, "the page table is [pages, n_seq_kv]");
    expect_extent("kv.page_table", table, 3, 1, "the page table is [pages, n_seq_kv]");
    // Every page a sequence uses must exist: the kernels read its rows without further checks.
    for (int64_t s = 0; s < P.n_seq_kv; ++s)
        for (int64_t i = 0; i < pages_used; ++i) {
            int32_t page;
            std::memcpy(&page, at(*table, s, 0, 0) + size_t(i) * table->nb[0], 4);
            if (page < 0 || page >= n_pages) {
                std::string entry = "[";
                entry.append(std::to_string(i)).append(", ").append(std::to_string(s)).append("]");
                fail("kv.page_table", entry, int64_t(page), "a page of kv.k in [0, " + std::to_string(n_pages) + ")");
            }
        }
    Segment S;
    S.n_kv = kv->n_kv;
    check_segment_masks(P, S, o, mask, p->kv_pos, p->kv_pos0, "mask", "kv_pos", ".n_kv", "kv", "", "params");
    S.k = *k;
    S.v = *v;
    S.paged = true;
    S.page_shift = std::countr_zero(uint64_t(page_keys));
    S.page_table = *table;
    P.segments.push_back(S);
    finish_problem(P, o, p, q, sinks, state, out);
}

} // namespace fst
