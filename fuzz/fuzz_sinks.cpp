// fst_state_add_sinks under libFuzzer. The input decides the shape, the three views (layout, hostile edits),
// aliasing of state/out into sinks or into each other, and the data.
// Checked: no sanitizer report; a rejection has a message and writes nothing; a view the header forbids or an
// overlap is never accepted; an accepted call writes only the rows of state and out; a row that was empty becomes
// exactly (sinks[h], 1) with a zero output (SPEC section 2: the sink is a key with value zero); with finite inputs
// every row stays a valid state with a finite output.
#include "fuzz_support.h"

using namespace fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Reader in(data, size);
    Memory mem;
    const int64_t DV = 1 + in.u8() % 96, n_head = 1 + in.u8() % 16, n_q = 1 + in.u8() % 8, n_seq = 1 + in.u8() % 3;
    const Fill fill = in.u8() >= 224 ? Fill::Raw : Fill::Finite;
    Rng rng(in.u64());

    View sinks = make_view(in, mem, rng, fill, FST_TYPE_F32, {n_head, 1, 1, 1}, {FST_TYPE_F32});
    View state = make_view(in, mem, rng, fill, FST_TYPE_F32, {2, n_head, n_q, n_seq}, {FST_TYPE_F32});
    View out = make_view(in, mem, rng, fill, FST_TYPE_F32, {DV, n_head, n_q, n_seq}, {FST_TYPE_F32});

    std::string must_reject;
    if (in.rare()) {
        const uint8_t a = in.u8() % 4;
        View *w = a & 1 ? &state : &out;
        const View *t = a & 2 ? &sinks : (a & 1 ? &out : &state);
        if (alias_into(*w, *t, mem, in) && overlaps(w->t, t->t)) must_reject = "aliased views";
    }
    for (const View *v : {&sinks, &state, &out})
        if (v->backing == Backing::TooBig) return 0;
    if (fill == Fill::Finite) make_states_valid(state, rng);
    for (const View *v : {&sinks, &state, &out})
        if (must_reject.empty() && !v->reject_reason.empty()) must_reject = v->reject_reason;

    mem.snapshot();
    prime_last_error("fst_state_add_sinks");
    const fst_status st = fst_state_add_sinks(&sinks.t, &state.t, &out.t);
    if (st != FST_OK) {
        check_rejection(st, "fst_state_add_sinks");
        check_untouched(mem, {}, "rejected fst_state_add_sinks");
        return 0;
    }
    note_accepted("fst_state_add_sinks");
    if (!must_reject.empty()) fail("fst_state_add_sinks accepted an invalid call: " + must_reject);
    check_untouched(mem, {&state, &out}, "fst_state_add_sinks");

    for (int64_t s = 0; s < state.t.ne[3]; ++s) // the accepted extents (an edit may have changed the planned ones)
        for (int64_t r = 0; r < state.t.ne[2]; ++r)
            for (int64_t h = 0; h < state.t.ne[1]; ++h) {
                auto *ms = static_cast<unsigned char *>(state.t.data) + size_t(h) * state.t.nb[1] +
                           size_t(r) * state.t.nb[2] + size_t(s) * state.t.nb[3];
                auto *o = static_cast<unsigned char *>(out.t.data) + size_t(h) * out.t.nb[1] + size_t(r) * out.t.nb[2] +
                          size_t(s) * out.t.nb[3];
                const float sink = load_f32(static_cast<unsigned char *>(sinks.t.data) + size_t(h) * sinks.t.nb[0]);
                if (load_f32(mem.before(ms + 4)) != 0.0f) continue;
                if (std::memcmp(ms, &sink, 4) != 0 || load_f32(ms + 4) != 1.0f)
                    fail("an empty row did not become (sink, 1)");
                for (int64_t c = 0; c < out.t.ne[0]; ++c) // out.ne[0] (DV) is free in add_sinks
                    if (load_f32(o + 4 * c) != 0.0f) fail("an empty row's output is not zero after the sink");
            }
    if (fill == Fill::Finite) check_finite_result(state, out, "fst_state_add_sinks");
    return 0;
}
