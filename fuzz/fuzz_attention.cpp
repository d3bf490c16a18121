// The attention entry points under libFuzzer: fst_attn_with_state, fst_attn_segments, fst_attn_with_state_part and
// fst_attn_segments_part. The input decides the entry point, the problem (types, D, DV, n_q, heads, sequences,
// n_kv), which optional tensors exist (mask, sinks, q_pos, kv_pos), the parameters, every view's layout and hostile
// edits, aliasing of out/state into an input, the split into segments, ith/nth, the data (finite or raw bytes) and
// the thread count (1 or 2).
// Checked: no sanitizer report; a rejection has a message naming the function and writes nothing; a view the
// header forbids, bad parameters, an overlap, a bad segment list or ith/nth are never accepted; an accepted call
// writes only the rows of state and out, and with finite inputs leaves valid states and finite outputs; an empty
// segment without sinks changes nothing; and the header's equivalences hold bit for bit: 1 and 2 threads, the
// segments call and fst_attn_with_state segment by segment, all nth parts and the whole call.
#include "fuzz_support.h"

using namespace fuzz;

namespace {

constexpr int64_t kMaxWork = int64_t(1) << 19; // query rows x keys x (D + DV): keeps one execution near a millisecond

int64_t dim_from(uint8_t b) { return b < 128 ? 32 * (1 + b % 4) : 1 + b % 128; } // mostly block multiples

enum class Entry { WithState, Segments, Part, SegmentsPart };
const char *name_of(Entry e) {
    switch (e) {
    case Entry::WithState: return "fst_attn_with_state";
    case Entry::Segments: return "fst_attn_segments";
    case Entry::Part: return "fst_attn_with_state_part";
    case Entry::SegmentsPart: return "fst_attn_segments_part";
    }
    return "";
}

// Keys [j0, j0 + n) of a view along `dim` (1 for K/V, 0 for a mask or kv_pos), clamped to the view's own extent so
// that a slice never reaches outside the bytes the view spans. Views without an exact buffer (which the library must
// reject, or empty ones) stay as they are.
fst_tensor slice(const View &v, int dim, int64_t j0, int64_t n) {
    fst_tensor t = v.t;
    if (v.backing != Backing::Exact || t.data == nullptr) return t;
    j0 = std::min(j0, t.ne[dim]);
    t.ne[dim] = std::min(n, t.ne[dim] - j0);
    const TypeInfo ti = type_info(t.type);
    const size_t offset = dim == 0 ? size_t(j0 / ti.block_elems) * ti.block_bytes : size_t(j0) * t.nb[dim];
    t.data = static_cast<unsigned char *>(t.data) + offset;
    return t;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Reader in(data, size);
    Memory mem;
    const uint8_t mode = in.u8();
    const Entry entry = mode % 4 == 2   ? Entry::Segments
                        : mode % 4 == 3 ? ((mode & 4) ? Entry::SegmentsPart : Entry::Part)
                                        : Entry::WithState;
    const bool multi = entry == Entry::Segments || entry == Entry::SegmentsPart;
    const fst_type kQTypes[] = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16};
    const fst_type kKvTypes[] = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0};
    const std::initializer_list<fst_type> q_types = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16};
    const std::initializer_list<fst_type> kv_types = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0,
                                                      FST_TYPE_Q4_0};

    // The problem.
    const fst_type tq = kQTypes[in.u8() % 3], tk = kKvTypes[in.u8() % 5], tv = kKvTypes[in.u8() % 5];
    int64_t D = dim_from(in.u8()), DV = dim_from(in.u8());
    int64_t n_q = 1 + in.u8() % 8;
    // A KV-heads byte of 248 or more (1 in 32) makes a long decode: keys past four 1024-key chunks, so that the keys
    // are not cut into pieces and row groups take several chunks per kernel call (attention/tile.cpp's spans); up to 32
    // times the usual work. 248-251: 32 KV heads of 1-4 query rows, D = DV = 32; 252-255: 2 KV heads, D = DV = 128, the
    // model's head size, whose V rows take the kernels' whole-row passes. (The bytes read stay the same, so saved
    // inputs keep their meaning unless that byte was 252 or more.)
    const uint8_t kv_heads = in.u8();
    const bool long_decode = kv_heads >= 248, long_wide = kv_heads >= 252;
    const int64_t n_head_kv = long_decode ? (long_wide ? 2 : 32) : 1 + kv_heads % 4, n_head = n_head_kv * (1 + in.u8() % 4);
    int64_t n_seq_kv = 1 + in.u8() % 2, n_seq = n_seq_kv * (1 + in.u8() % 2);
    int64_t n_kv = in.u16() % (long_decode ? 4601 : 601); // 0 (an empty segment) to several chunks
    if (long_decode) D = DV = long_wide ? 128 : 32, n_q = 1, n_seq_kv = n_seq = 1;
    const int64_t rows = n_q * n_head * n_seq;
    n_kv = std::min(n_kv, (long_decode ? 32 : 1) * kMaxWork / (rows * (D + DV)));

    const uint8_t features = in.u8();
    const bool has_mask = features & 1, has_sinks = features & 2, has_q_pos = features & 4, has_kv_pos = features & 8;
    const bool init_with_library = features & 16;
    const Fill fill = (features & 0xe0) == 0xe0 ? Fill::Raw : Fill::Finite;
    Rng rng(in.u64());

    // Parameters, mostly valid; the tables include values the library must reject.
    fst_attn_params p = fst_attn_default_params();
    std::string param_reject;
    p.scale = in.pick<float>({1.0f, 0.125f, 1.0f / std::sqrt(float(D)), 0.0f, -1.0f, 0.01f, 30.0f, 1e4f});
    p.max_bias = in.pick<float>({0.0f, 0.0f, 8.0f, 0.5f, 1e3f});
    p.softcap = in.pick<float>({0.0f, 0.0f, 30.0f, 50.0f, 1.0f, 1e-3f});
    set_enum(p.virtual_mask, in.pick<int>({FST_MASK_NONE, FST_MASK_NONE, FST_MASK_CAUSAL, FST_MASK_SLIDING_WINDOW, 3}));
    // Positions and windows far apart test the position arithmetic for overflow (the library bounds them).
    const int64_t big = int64_t(1) << 60, max64 = std::numeric_limits<int64_t>::max();
    p.window = in.pick<int64_t>({1, 2, 7, 64, 1000, 0, -1, big, big + 1, max64, -max64 - 1});
    const std::initializer_list<int64_t> positions = {
        0, 0, 5, -3, n_kv - n_q, int64_t(1) << 40, big, -big, big + 1, -big - 1, 4 * big, -4 * big, max64, -max64 - 1};
    p.q_pos0 = in.pick<int64_t>(positions);
    p.kv_pos0 = in.pick<int64_t>(positions);
    p.n_threads = 1 + (in.u8() & 1);
    set_enum(p.isa, in.u8() % 4);
    if (in.rare()) {
        switch (in.u8() % 10) {
        case 0: p.scale = in.pick<float>({NAN, kInf, -kInf}); break;
        case 1: p.max_bias = in.pick<float>({-1.0f, NAN, kInf}); break;
        case 2: p.softcap = in.pick<float>({-1.0f, NAN, kInf}); break;
        case 3: p.n_threads = in.pick<int32_t>({-1, std::numeric_limits<int32_t>::min()}); break;
        case 4: p.softcap = std::numeric_limits<float>::denorm_min(); break; // valid, and extreme
        case 5: p.n_threads = 0; break;                                      // every hardware thread: valid
        case 6: p.isa = FST_ISA_AUTO; break;
        // Enum fields holding values a C caller can store and C++ cannot name.
        case 7: set_enum(p.isa, in.pick<int>({4, -1, std::numeric_limits<int>::max()})); break;
        case 8: set_enum(p.virtual_mask, in.pick<int>({7, -1, std::numeric_limits<int>::min()})); break;
        case 9: set_enum(p.precision, in.pick<int>({1, -1, 1000})); break;
        }
    }
    if (!std::isfinite(p.scale)) param_reject = "scale not finite";
    if (!(p.max_bias >= 0.0f) || !std::isfinite(p.max_bias)) param_reject = "max_bias";
    if (!(p.softcap >= 0.0f) || !std::isfinite(p.softcap)) param_reject = "softcap";
    const int virtual_mask = enum_int(p.virtual_mask), isa = enum_int(p.isa);
    if (virtual_mask < 0 || virtual_mask > 2) param_reject = "virtual_mask";
    if (virtual_mask == FST_MASK_SLIDING_WINDOW && p.window < 1) param_reject = "window < 1";
    if (isa < 0 || isa > 3) param_reject = "isa";
    if (enum_int(p.precision) != FST_PRECISION_EXACT) param_reject = "precision";
    if (p.n_threads < 0) param_reject = "n_threads < 0";

    // The tensors.
    const unsigned kv_empty = 1u << 1, col_empty = 1u << 0;
    View q = make_view(in, mem, rng, fill, tq, {D, n_q, n_head, n_seq}, q_types);
    View k = make_view(in, mem, rng, fill, tk, {D, n_kv, n_head_kv, n_seq_kv}, kv_types, kv_empty);
    View v = make_view(in, mem, rng, fill, tv, {DV, n_kv, n_head_kv, n_seq_kv}, kv_types, kv_empty);
    View mask, sinks, q_pos, kv_pos;
    if (has_mask) {
        const fst_type mt = (in.u8() & 1) ? FST_TYPE_F32 : FST_TYPE_F16;
        const int64_t mask_rows = n_q + in.u8() % 3, m2 = divisor_of(n_head, in), m3 = divisor_of(n_seq, in);
        const uint8_t inf_rate = in.u8();
        mask = make_view(in, mem, rng, fill, mt, {n_kv, mask_rows, m2, m3}, {FST_TYPE_F16, FST_TYPE_F32}, col_empty);
        // Hidden keys: -inf entries at a rate the input picks (whole rows when the rate is high).
        if (mask.backing == Backing::Exact && mask.reject_reason.empty()) {
            const size_t es = enum_int(mask.t.type) == FST_TYPE_F32 ? 4 : 2;
            for_each_row(mask.t, [&](unsigned char *row) {
                for (int64_t j = 0; j < mask.t.ne[0]; ++j) {
                    if (rng.byte() >= inf_rate) continue;
                    if (es == 4) store_f32(row + 4 * j, -kInf);
                    else row[2 * j] = 0x00, row[2 * j + 1] = 0xfc; // F16 -inf
                }
            });
        }
    }
    if (has_sinks) sinks = make_view(in, mem, rng, fill, FST_TYPE_F32, {n_head, 1, 1, 1}, {FST_TYPE_F32});
    if (has_q_pos)
        q_pos = make_view(in, mem, rng, fill, FST_TYPE_I32, {n_q, divisor_of(n_seq, in), 1, 1}, {FST_TYPE_I32});
    if (has_kv_pos)
        kv_pos =
            make_view(in, mem, rng, fill, FST_TYPE_I32, {n_kv, divisor_of(n_seq, in), 1, 1}, {FST_TYPE_I32}, col_empty);
    p.q_pos = has_q_pos ? &q_pos.t : nullptr;
    p.kv_pos = has_kv_pos ? &kv_pos.t : nullptr;

    View state = make_view(in, mem, rng, fill, FST_TYPE_F32, {2, n_head, n_q, n_seq}, {FST_TYPE_F32});
    View out = make_view(in, mem, rng, fill, FST_TYPE_F32, {DV, n_head, n_q, n_seq}, {FST_TYPE_F32});

    // Rarely: out or state placed inside the buffer of a tensor it must not overlap (judged below, from the bytes of
    // the tensors actually passed).
    if (in.rare()) {
        const uint8_t a = in.u8();
        View *written = (a & 1) ? &state : &out;
        const View *targets[] = {&q, &k, &v, &mask, &sinks, (a & 1) ? &out : &state};
        alias_into(*written, *targets[(a >> 1) % 6], mem, in);
    }
    std::string must_reject;

    // Segments: consecutive KV ranges of k, v, mask and kv_pos (rarely a bad list: a negative count, no array, a
    // segment without k). A single call is one segment with the parameters' positions.
    std::vector<fst_tensor> seg_k, seg_v, seg_mask, seg_kv_pos;
    std::vector<fst_segment> segments;
    int64_t n_segments = 1;
    bool null_segments = false;
    if (multi) {
        n_segments = 1 + in.u8() % (long_decode ? 24 : 3); // long: many short segments sharing kernel calls
        std::vector<int64_t> cuts = {0, n_kv};
        for (int64_t i = 1; i < n_segments; ++i) cuts.push_back(in.u16() % (n_kv + 1));
        std::sort(cuts.begin(), cuts.end());
        for (int64_t i = 0; i < n_segments; ++i) {
            const int64_t j0 = cuts[size_t(i)], n = cuts[size_t(i) + 1] - j0;
            seg_k.push_back(slice(k, 1, j0, n));
            seg_v.push_back(slice(v, 1, j0, n));
            seg_mask.push_back(slice(mask, 0, j0, n));
            seg_kv_pos.push_back(slice(kv_pos, 0, j0, n));
        }
        for (int64_t i = 0; i < n_segments; ++i) {
            fst_segment g{};
            g.k = &seg_k[size_t(i)];
            g.v = &seg_v[size_t(i)];
            g.mask = has_mask ? &seg_mask[size_t(i)] : nullptr;
            g.kv_pos = has_kv_pos ? &seg_kv_pos[size_t(i)] : nullptr;
            g.kv_pos0 = (p.kv_pos0 > big || p.kv_pos0 < -big) ? p.kv_pos0 : p.kv_pos0 + cuts[size_t(i)];
            segments.push_back(g);
        }
        if (in.rare()) {
            switch (in.u8() % 3) {
            case 0: n_segments = in.pick<int64_t>({-1, std::numeric_limits<int64_t>::min()}); break;
            case 1: null_segments = true; break;
            case 2: segments[0].k = nullptr; break;
            }
            must_reject = "a bad segment list";
        }
    }
    int nth = 1 + in.u8() % 4, ith = in.u8() % nth;
    if ((entry == Entry::Part || entry == Entry::SegmentsPart) && in.rare()) {
        const uint8_t c = in.u8() % 4;
        if (c == 0) ith = -1;
        if (c == 1) ith = nth;
        if (c == 2) nth = 0, ith = 0;
        if (c == 3) nth = -1, ith = 0;
        must_reject = "ith/nth";
    }

    const View *all[] = {&q, &k, &v, &mask, &sinks, &q_pos, &kv_pos, &state, &out};
    for (const View *w : all)
        if (w->backing == Backing::TooBig) return 0; // cannot be backed; see fuzz_support.h

    if (fill == Fill::Finite) make_states_valid(state, rng);
    if (init_with_library) fst_state_init(&state.t, &out.t);

    // What the call must reject. With segments, the library sees the slices, not k, v, mask and kv_pos.
    if (!param_reject.empty()) must_reject = param_reject;
    const char *names[] = {"q", "k", "v", "mask", "sinks", "q_pos", "kv_pos", "state", "out"};
    const bool present[] = {true, !multi, !multi, has_mask && !multi, has_sinks, has_q_pos, has_kv_pos && !multi,
                            true, true};
    for (int i = 0; i < 9; ++i)
        if (present[i] && !all[i]->reject_reason.empty() && must_reject.empty())
            must_reject = std::string(names[i]) + ": " + all[i]->reject_reason;
    std::vector<std::pair<std::string, fst_tensor>> read; // every input the call reads, for the overlap rule
    for (int i = 0; i < 7; ++i)
        if (present[i]) read.push_back({names[i], all[i]->t});
    for (size_t i = 0; i < seg_k.size(); ++i) {
        const std::string at = "segment " + std::to_string(i) + " ";
        std::pair<std::string, fst_tensor> parts[] = {
            {at + "k", seg_k[i]}, {at + "v", seg_v[i]}, {at + "mask", seg_mask[i]}, {at + "kv_pos", seg_kv_pos[i]}};
        const std::initializer_list<fst_type> allowed[] = {
            kv_types, kv_types, {FST_TYPE_F16, FST_TYPE_F32}, {FST_TYPE_I32}};
        const unsigned may_be_empty[] = {kv_empty, kv_empty, col_empty, col_empty};
        const bool used[] = {true, true, has_mask, has_kv_pos};
        for (int j = 0; j < 4; ++j) {
            if (!used[j]) continue;
            read.push_back(parts[j]);
            const std::string r = judge(parts[j].second, allowed[j], may_be_empty[j]).reject_reason;
            if (!r.empty() && must_reject.empty()) must_reject = parts[j].first + ": " + r;
        }
    }
    for (const auto &[name, t] : read)
        for (const View *w : {&state, &out})
            if (overlaps(w->t, t) && must_reject.empty())
                must_reject = std::string(w == &state ? "state" : "out") + " overlaps " + name;
    if (overlaps(state.t, out.t) && must_reject.empty()) must_reject = "state overlaps out";

    if (verbose()) {
        std::fprintf(stderr,
                     "%s ith %d nth %d n_segments %lld%s; scale %g max_bias %g softcap %g virtual_mask %d "
                     "window %lld q_pos0 %lld kv_pos0 %lld n_threads %d isa %d; %s data\n",
                     name_of(entry), ith, nth, (long long)n_segments, null_segments ? " (NULL array)" : "", p.scale,
                     p.max_bias, p.softcap, virtual_mask, (long long)p.window, (long long)p.q_pos0,
                     (long long)p.kv_pos0, p.n_threads, isa, fill == Fill::Finite ? "finite" : "raw");
        for (int i = 0; i < 9; ++i)
            if (present[i]) print_view(names[i], *all[i]);
        for (size_t i = 0; i < segments.size(); ++i) {
            std::fprintf(stderr, "segment %zu kv_pos0 %lld: %s %s\n", i, (long long)segments[i].kv_pos0,
                         describe("k", seg_k[i]).c_str(), describe("v", seg_v[i]).c_str());
        }
        if (!must_reject.empty()) std::fprintf(stderr, "must reject: %s\n", must_reject.c_str());
    }
    const fst_tensor *mask_arg = has_mask ? &mask.t : nullptr, *sinks_arg = has_sinks ? &sinks.t : nullptr;
    const fst_segment *segments_arg = null_segments ? nullptr : segments.data();
    auto call = [&](Entry e, int part) {
        switch (e) {
        case Entry::WithState: return fst_attn_with_state(&p, &q.t, &k.t, &v.t, mask_arg, sinks_arg, &state.t, &out.t);
        case Entry::Segments: return fst_attn_segments(&p, &q.t, segments_arg, n_segments, sinks_arg, &state.t, &out.t);
        case Entry::Part:
            return fst_attn_with_state_part(&p, &q.t, &k.t, &v.t, mask_arg, sinks_arg, &state.t, &out.t, part, nth);
        case Entry::SegmentsPart:
            return fst_attn_segments_part(&p, &q.t, segments_arg, n_segments, sinks_arg, &state.t, &out.t, part, nth);
        }
        return FST_ERR_INVALID_ARGUMENT;
    };

    if (!judged_call(mem, name_of(entry), must_reject, [&] { return call(entry, ith); })) return 0;
    check_untouched(mem, {&state, &out}, name_of(entry));

    // The header's equivalences, bit for bit. First complete the call (the other parts), then recompute the same
    // result another way from the snapshot and compare.
    if (entry == Entry::Part || entry == Entry::SegmentsPart)
        for (int part = 0; part < nth; ++part)
            if (part != ith && call(entry, part) != FST_OK) fail("part " + std::to_string(part) + " failed");
    if (fill == Fill::Finite) check_finite_result(state, out, name_of(entry));
    if (k.empty() && !has_sinks && !(mem.unchanged(state.block) && mem.unchanged(out.block)))
        fail("an empty segment without sinks changed state or out");

    const std::vector<unsigned char> first_state(mem.data(state.block), mem.data(state.block) + mem.size(state.block));
    const std::vector<unsigned char> first_out(mem.data(out.block), mem.data(out.block) + mem.size(out.block));
    auto expect_same = [&](const char *what) {
        if (std::memcmp(first_state.data(), mem.data(state.block), first_state.size()) != 0 ||
            std::memcmp(first_out.data(), mem.data(out.block), first_out.size()) != 0)
            fail(std::string(name_of(entry)) + ": not the same bits as " + what);
    };
    const uint8_t recheck = in.u8();
    mem.restore(state.block);
    mem.restore(out.block);
    if (entry == Entry::Part || entry == Entry::SegmentsPart) {
        // All nth parts together: the whole call.
        if (call(entry == Entry::Part ? Entry::WithState : Entry::Segments, 0) != FST_OK) fail("the whole call failed");
        expect_same("the whole call");
    } else if (multi && (recheck & 1)) {
        // fst_attn_segments: fst_attn_with_state on each segment in order, sinks with the last.
        for (int64_t i = 0; i < n_segments; ++i) {
            fst_attn_params pi = p;
            pi.kv_pos0 = segments[size_t(i)].kv_pos0;
            pi.kv_pos = segments[size_t(i)].kv_pos;
            if (fst_attn_with_state(&pi, &q.t, &seg_k[size_t(i)], &seg_v[size_t(i)], segments[size_t(i)].mask,
                                    i + 1 == n_segments ? sinks_arg : nullptr, &state.t, &out.t) != FST_OK)
                fail("segment " + std::to_string(i) + " alone failed: " + fst_last_error());
        }
        expect_same("the segments one by one");
    } else if (recheck & 2) {
        // The other thread count (SPEC section 4).
        p.n_threads = p.n_threads == 1 ? 2 : 1;
        if (call(entry, 0) != FST_OK) fail("the same call with another thread count failed");
        expect_same("the other thread count");
    }
    return 0;
}
