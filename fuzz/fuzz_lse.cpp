// fst_state_export_lse and fst_state_import_lse under libFuzzer. The input decides export or import, the shape,
// the base (2, e, near misses and nonsense), the views (layout, hostile edits), aliasing, and the data; imported
// LSE values include +inf, -inf and NaN at a rate the input picks.
// Checked: no sanitizer report; a rejection has a message and writes nothing; a bad base, a view the header
// forbids or an overlap is never accepted; an accepted call writes only the rows of its outputs. Export with valid
// finite states: LSE = (M + ln S) / ln(base) within float rounding, -inf exactly for S == 0. Import: a finite LSE
// gives (LSE * ln(base), 1) and leaves the out row as it was; -inf, +inf and NaN give (-inf, 0) and a zero row.
#include "fuzz_support.h"

using namespace fuzz;

namespace {

unsigned char *row3(const fst_tensor &t, int64_t a, int64_t b, int64_t c, int first_dim) {
    return static_cast<unsigned char *>(t.data) + size_t(a) * t.nb[first_dim] + size_t(b) * t.nb[first_dim + 1] +
           size_t(c) * t.nb[first_dim + 2];
}

bool close(double x, double expected) { return std::fabs(x - expected) <= 4e-7 * std::max(1.0, std::fabs(expected)); }

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Reader in(data, size);
    Memory mem;
    const bool do_import = in.u8() & 1;
    const int64_t DV = 1 + in.u8() % 64, n_head = 1 + in.u8() % 16, n_q = 1 + in.u8() % 8, n_seq = 1 + in.u8() % 3;
    const float e = 2.718281828f;
    const float base = in.pick<float>({2.0f, e, float(M_E), std::nextafter(2.0f, 3.0f), std::nextafter(e, 0.0f), 10.0f,
                                       0.0f, -2.0f, 1.0f, NAN, kInf, -kInf, 2.00001f, 2.7183f, 1e30f});
    const bool base_ok = std::fabs(double(base) - 2.0) <= 1e-6 || std::fabs(double(base) - 2.718281828459045) <= 1e-6;
    const bool base_bad =
        !(std::fabs(double(base) - 2.0) <= 1e-5 || std::fabs(double(base) - 2.718281828459045) <= 1e-5);
    const double ln_base = std::fabs(double(base) - 2.0) < 0.1 ? std::log(2.0) : 1.0;
    const Fill fill = in.u8() >= 224 ? Fill::Raw : Fill::Finite;
    const uint8_t special_rate = in.u8();
    Rng rng(in.u64());

    View lse = make_view(in, mem, rng, fill, FST_TYPE_F32, {n_head, n_q, n_seq, 1}, {FST_TYPE_F32});
    View state = make_view(in, mem, rng, fill, FST_TYPE_F32, {2, n_head, n_q, n_seq}, {FST_TYPE_F32});
    View out = make_view(in, mem, rng, fill, FST_TYPE_F32, {DV, n_head, n_q, n_seq}, {FST_TYPE_F32});

    std::string must_reject = base_bad ? "base" : "";
    if (in.rare()) {
        const uint8_t a = in.u8() % 4;
        // Export writes lse (reads state); import writes state and out (reads lse).
        View *w = do_import ? (a & 1 ? &state : &out) : &lse;
        const View *t = do_import ? (a & 2 ? &lse : (a & 1 ? &out : &state)) : &state;
        if (alias_into(*w, *t, mem, in) && overlaps(w->t, t->t) && must_reject.empty()) must_reject = "aliased views";
    }
    for (const View *v : {&lse, &state, &out})
        if (v->backing == Backing::TooBig) return 0;
    if (fill == Fill::Finite) make_states_valid(state, rng);
    static const float kSpecial[4] = {-kInf, kInf, NAN, -kInf};
    if (lse.backing == Backing::Exact && lse.t.data && lse.reject_reason.empty())
        for_each_row(lse.t, [&](unsigned char *row) {
            for (int64_t i = 0; i < lse.t.ne[0]; ++i)
                if (rng.byte() < special_rate) store_f32(row + 4 * i, kSpecial[rng.byte() % 4]);
        });
    const View *used[] = {&lse, &state, &out};
    for (int i = 0; i < (do_import ? 3 : 2); ++i)
        if (must_reject.empty() && !used[i]->reject_reason.empty()) must_reject = used[i]->reject_reason;

    const char *function = do_import ? "fst_state_import_lse" : "fst_state_export_lse";
    if (!judged_call(mem, function, must_reject, [&] {
            return do_import ? fst_state_import_lse(&lse.t, base, &state.t, &out.t) : fst_state_export_lse(&state.t, base, &lse.t);
        }))
        return 0;
    if (!base_ok && !base_bad) return 0; // between the documented tolerance and 1e-5: either answer is fine
    if (do_import) check_untouched(mem, {&state, &out}, function);
    else check_untouched(mem, {&lse}, function);

    for (int64_t s = 0; s < state.t.ne[3]; ++s) // the accepted extents (an edit may have changed the planned ones)
        for (int64_t r = 0; r < state.t.ne[2]; ++r)
            for (int64_t h = 0; h < state.t.ne[1]; ++h) {
                unsigned char *ms = row3(state.t, h, r, s, 1), *l = row3(lse.t, h, r, s, 0);
                const float M = load_f32(ms), S = load_f32(ms + 4), L = load_f32(l);
                if (do_import) {
                    unsigned char *o = row3(out.t, h, r, s, 1);
                    if (std::isfinite(L)) {
                        if (S != 1.0f || !close(M, double(L) * ln_base))
                            fail("import: a finite LSE gave a wrong state");
                        if (std::memcmp(o, mem.before(o), size_t(out.t.ne[0]) * 4) != 0)
                            fail("import: a finite LSE changed out");
                    } else {
                        if (M != -kInf || S != 0.0f) fail("import: a non-finite LSE did not give the empty state");
                        for (int64_t c = 0; c < out.t.ne[0]; ++c) // out.ne[0] (DV) is free in import
                            if (load_f32(o + 4 * c) != 0.0f) fail("import: an empty row's output is not zero");
                    }
                } else if (fill == Fill::Finite) {
                    if (S == 0.0f) {
                        if (L != -kInf) fail("export: the empty state's LSE is not -inf");
                    } else if (!close(L, (double(M) + std::log(double(S))) / ln_base)) {
                        fail("export: LSE " + std::to_string(L) + " for (M, S) = (" + std::to_string(M) + ", " +
                             std::to_string(S) + ")");
                    }
                }
            }
    return 0;
}
