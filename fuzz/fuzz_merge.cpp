// fst_state_merge and fst_state_init under libFuzzer. The input decides the shape (DV, n_head, n_q, n_seq), the
// four views (layout and hostile edits), aliasing between the pairs, and the data.
// Checked: no sanitizer report; a rejection has a message and writes nothing; a view the header forbids or two
// overlapping pairs are never accepted; an accepted call writes only the rows of state and out. Merge, row by row
// (SPEC section 2): an empty other (S_b == 0) leaves the row bit-identical; an empty own row (S_a == 0) becomes
// the other row exactly; with finite inputs every row stays a valid state with a finite output. Init: every row
// (-inf, 0) and a zero output.
#include "fuzz_support.h"

using namespace fuzz;

namespace {

const unsigned char *row_of(const fst_tensor &t, int64_t h, int64_t r, int64_t s) {
    return static_cast<const unsigned char *>(t.data) + size_t(h) * t.nb[1] + size_t(r) * t.nb[2] + size_t(s) * t.nb[3];
}

void check_merge_rows(const Memory &mem, const View &state, const View &out, const View &other_state,
                      const View &other_out) {
    const int64_t DV = out.t.ne[0];
    for (int64_t s = 0; s < state.t.ne[3]; ++s)
        for (int64_t r = 0; r < state.t.ne[2]; ++r)
            for (int64_t h = 0; h < state.t.ne[1]; ++h) {
                const unsigned char *a = row_of(state.t, h, r, s), *oa = row_of(out.t, h, r, s);
                const unsigned char *b = row_of(other_state.t, h, r, s), *ob = row_of(other_out.t, h, r, s);
                const float Sa = load_f32(mem.before(a + 4)), Sb = load_f32(b + 4);
                if (Sb == 0.0f) { // a is left as it was, bit for bit
                    for (size_t i = 0; i < 8; ++i)
                        if (a[i] != *mem.before(a + i)) fail("merging an empty row changed the state");
                    for (size_t i = 0; i < size_t(DV) * 4; ++i)
                        if (oa[i] != *mem.before(oa + i)) fail("merging an empty row changed the output");
                } else if (Sa == 0.0f) { // the result is b, bit for bit
                    if (std::memcmp(a, b, 8) != 0) fail("merging into an empty row did not copy the other state");
                    if (std::memcmp(oa, ob, size_t(DV) * 4) != 0)
                        fail("merging into an empty row did not copy the other output");
                }
            }
}

void check_init_rows(const View &state, const View &out) {
    for_each_row(state.t, [&](unsigned char *p) {
        if (load_f32(p) != -kInf || load_f32(p + 4) != 0.0f) fail("fst_state_init: a row is not (-inf, 0)");
    });
    for_each_row(out.t, [&](unsigned char *p) {
        for (int64_t c = 0; c < out.t.ne[0]; ++c)
            if (load_f32(p + 4 * c) != 0.0f || std::signbit(load_f32(p + 4 * c))) fail("fst_state_init: out not +0");
    });
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Reader in(data, size);
    Memory mem;
    const uint8_t op = in.u8() % 4; // 0, 1: merge; 2: init; 3: merge a pair with itself
    const int64_t DV = 1 + in.u8() % 96, n_head = 1 + in.u8() % 8, n_q = 1 + in.u8() % 8, n_seq = 1 + in.u8() % 3;
    const Fill fill = in.u8() >= 224 ? Fill::Raw : Fill::Finite;
    Rng rng(in.u64());

    const std::array<int64_t, 4> state_ne = {2, n_head, n_q, n_seq}, out_ne = {DV, n_head, n_q, n_seq};
    View state = make_view(in, mem, rng, fill, FST_TYPE_F32, state_ne, {FST_TYPE_F32});
    View out = make_view(in, mem, rng, fill, FST_TYPE_F32, out_ne, {FST_TYPE_F32});
    View other_state = make_view(in, mem, rng, fill, FST_TYPE_F32, state_ne, {FST_TYPE_F32});
    View other_out = make_view(in, mem, rng, fill, FST_TYPE_F32, out_ne, {FST_TYPE_F32});
    if (op == 3) other_state = state, other_out = out;

    // Rarely: one view of a pair placed inside another view.
    std::string alias_reject = op == 3 ? "the pair merged with itself" : "";
    if (in.rare()) {
        View *views[] = {&state, &out, &other_state, &other_out};
        const char *names[] = {"state", "out", "other_state", "other_out"};
        const uint8_t a = in.u8();
        const int w = a & 3, t = (a >> 2) & 3;
        const bool counts = op != 2 || (w < 2 && t < 2); // init reads only state and out
        if (w != t && counts && alias_into(*views[w], *views[t], mem, in) && overlaps(views[w]->t, views[t]->t))
            alias_reject = std::string(names[w]) + " overlaps " + names[t];
    }
    for (const View *v : {&state, &out, &other_state, &other_out})
        if (v->backing == Backing::TooBig) return 0;
    if (fill == Fill::Finite) {
        make_states_valid(state, rng);
        make_states_valid(other_state, rng);
    }

    std::string must_reject = alias_reject;
    const View *checked[] = {&state, &out, &other_state, &other_out};
    const char *names[] = {"state", "out", "other_state", "other_out"};
    for (int i = 0; i < (op == 2 ? 2 : 4); ++i)
        if (must_reject.empty() && !checked[i]->reject_reason.empty())
            must_reject = std::string(names[i]) + ": " + checked[i]->reject_reason;

    const char *function = op == 2 ? "fst_state_init" : "fst_state_merge";
    if (!judged_call(mem, function, must_reject, [&] {
            return op == 2 ? fst_state_init(&state.t, &out.t) : fst_state_merge(&state.t, &out.t, &other_state.t, &other_out.t);
        }))
        return 0;
    check_untouched(mem, {&state, &out}, function);
    if (op == 2) {
        check_init_rows(state, out);
        return 0;
    }
    check_merge_rows(mem, state, out, other_state, other_out);
    if (fill == Fill::Finite) check_finite_result(state, out, "fst_state_merge");
    return 0;
}
