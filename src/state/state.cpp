#include "state/state.h"

#include "common/error.h"
#include "state/merge.h"

#include <cmath>
#include <string>
#include <vector>

namespace fst {

StatePair check_state_pair(const fst_tensor *state, const fst_tensor *out, const char *state_name,
                           const char *out_name) {
    StatePair p;
    p.state_bytes = check_view(state_name, state, {FST_TYPE_F32});
    p.out_bytes = check_view(out_name, out, {FST_TYPE_F32});
    expect_extent(state_name, state, 0, 2, "the pair (M, S)");
    const char *dims[4] = {"", ".ne[1], n_head", ".ne[2], n_q", ".ne[3], n_seq"};
    for (int i = 1; i < 4; ++i) expect_extent(out_name, out, i, state->ne[i], dims[i], state_name);
    expect_disjoint(out_name, p.out_bytes, state_name, p.state_bytes);
    p.dv = out->ne[0];
    p.n_head = state->ne[1];
    p.n_q = state->ne[2];
    p.n_seq = state->ne[3];
    return p;
}

namespace {

template <class Fn> void for_each_row(const StatePair &p, Fn &&fn) {
    for (int64_t s = 0; s < p.n_seq; ++s)
        for (int64_t r = 0; r < p.n_q; ++r)
            for (int64_t h = 0; h < p.n_head; ++h) fn(h, r, s);
}

// ln(base) for base 2 or e (within 1e-6); anything else is an invalid argument.
double log_of_base(float base) {
    if (std::fabs(double(base) - 2.0) <= 1e-6) return std::log(2.0);
    if (std::fabs(double(base) - 2.718281828459045) <= 1e-6) return 1.0;
    fail("argument", "base", std::to_string(base), "2 or e (2.718281828, within 1e-6)");
}

void check_lse(const fst_tensor *lse, const StatePair &p, ByteRange &bytes) {
    bytes = check_view("lse", lse, {FST_TYPE_F32});
    expect_extent("lse", lse, 0, p.n_head, "state.ne[1], n_head");
    expect_extent("lse", lse, 1, p.n_q, "state.ne[2], n_q");
    expect_extent("lse", lse, 2, p.n_seq, "state.ne[3], n_seq");
    expect_extent("lse", lse, 3, 1, "lse is [n_head, n_q, n_seq]");
}

float *lse_at(const fst_tensor &lse, int64_t h, int64_t r, int64_t s) {
    return reinterpret_cast<float *>(static_cast<unsigned char *>(lse.data) + size_t(h) * lse.nb[0] +
                                     size_t(r) * lse.nb[1] + size_t(s) * lse.nb[2]);
}

} // namespace

} // namespace fst

using namespace fst;

extern "C" {

fst_status fst_state_init(fst_tensor *state, fst_tensor *out) {
    return guard("fst_state_init", [&] {
        const StatePair p = check_state_pair(state, out);
        for_each_row(p, [&](int64_t h, int64_t r, int64_t s) {
            float *ms = state_row(*state, h, r, s);
            ms[0] = kNegInf;
            ms[1] = 0.0f;
            float *o = out_row(*out, h, r, s);
            for (int64_t c = 0; c < p.dv; ++c) o[c] = 0.0f;
        });
    });
}

fst_status fst_state_merge(fst_tensor *state, fst_tensor *out, const fst_tensor *other_state,
                           const fst_tensor *other_out) {
    return guard("fst_state_merge", [&] {
        const StatePair a = check_state_pair(state, out);
        const StatePair b = check_state_pair(other_state, other_out, "other_state", "other_out");
        const char *dims[4] = {"state.ne[0]", "state.ne[1]", "state.ne[2]", "state.ne[3]"};
        for (int i = 0; i < 4; ++i) expect_extent("other_state", other_state, i, state->ne[i], dims[i]);
        expect_extent("other_out", other_out, 0, out->ne[0], "out.ne[0], DV");
        expect_disjoint("state", a.state_bytes, "other_state", b.state_bytes);
        expect_disjoint("state", a.state_bytes, "other_out", b.out_bytes);
        expect_disjoint("out", a.out_bytes, "other_state", b.state_bytes);
        expect_disjoint("out", a.out_bytes, "other_out", b.out_bytes);
        for_each_row(a, [&](int64_t h, int64_t r, int64_t s) {
            float *ms = state_row(*state, h, r, s);
            const float *oms = state_row(*other_state, h, r, s);
            merge_state(ms[0], ms[1], out_row(*out, h, r, s), oms[0], oms[1], out_row(*other_out, h, r, s), a.dv);
        });
    });
}

fst_status fst_state_add_sinks(const fst_tensor *sinks, fst_tensor *state, fst_tensor *out) {
    return guard("fst_state_add_sinks", [&] {
        const StatePair p = check_state_pair(state, out);
        const ByteRange sb = check_view("sinks", sinks, {FST_TYPE_F32});
        expect_extent("sinks", sinks, 0, p.n_head, "state.ne[1], n_head");
        for (int i = 1; i < 4; ++i) expect_extent("sinks", sinks, i, 1, "sinks is [n_head]");
        expect_disjoint("state", p.state_bytes, "sinks", sb);
        expect_disjoint("out", p.out_bytes, "sinks", sb);
        for_each_row(p, [&](int64_t h, int64_t r, int64_t s) {
            const float sink = *reinterpret_cast<const float *>(static_cast<const unsigned char *>(sinks->data) + size_t(h) * 4);
            float *ms = state_row(*state, h, r, s);
            merge_state(ms[0], ms[1], out_row(*out, h, r, s), sink, 1.0f, nullptr, p.dv);
        });
    });
}

fst_status fst_state_export_lse(const fst_tensor *state, float base, fst_tensor *lse) {
    return guard("fst_state_export_lse", [&] {
        ByteRange sb = check_view("state", state, {FST_TYPE_F32});
        expect_extent("state", state, 0, 2, "the pair (M, S)");
        StatePair p;
        p.n_head = state->ne[1];
        p.n_q = state->ne[2];
        p.n_seq = state->ne[3];
        ByteRange lb;
        check_lse(lse, p, lb);
        expect_disjoint("lse", lb, "state", sb);
        const double ln_base = log_of_base(base);
        for_each_row(p, [&](int64_t h, int64_t r, int64_t s) {
            const float *ms = state_row(*state, h, r, s);
            const double v = ms[1] == 0.0f ? -INFINITY : (double(ms[0]) + std::log(double(ms[1]))) / ln_base;
            *lse_at(*lse, h, r, s) = float(v);
        });
    });
}

fst_status fst_state_import_lse(const fst_tensor *lse, float base, fst_tensor *state, fst_tensor *out) {
    return guard("fst_state_import_lse", [&] {
        const StatePair p = check_state_pair(state, out);
        ByteRange lb;
        check_lse(lse, p, lb);
        expect_disjoint("state", p.state_bytes, "lse", lb);
        expect_disjoint("out", p.out_bytes, "lse", lb);
        const double ln_base = log_of_base(base);
        for_each_row(p, [&](int64_t h, int64_t r, int64_t s) {
            const float v = *lse_at(*lse, h, r, s);
            float *ms = state_row(*state, h, r, s);
            if (std::isfinite(v)) {
                ms[0] = float(double(v) * ln_base);
                ms[1] = 1.0f;
            } else { // -inf is the empty state; +inf and NaN carry no usable number and are treated as empty too
                ms[0] = kNegInf;
                ms[1] = 0.0f;
                float *o = out_row(*out, h, r, s);
                for (int64_t c = 0; c < p.dv; ++c) o[c] = 0.0f;
            }
        });
    });
}

} // extern "C"
