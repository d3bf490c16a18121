// fst_attn_paged and fst_attn_paged_part under libFuzzer. The input decides the problem (types, D, DV, n_q, heads,
// sequences), the page size (rarely one the header forbids), the pools' and the page table's layouts and hostile
// edits (fuzz_support.h), the table's entries (a random page of the pool each, rarely one outside it), n_kv (rarely
// more keys than the table lists, or negative), the mask and sinks, ith/nth, the data and the thread count.
// Checked: no sanitizer report (the pools are blocks of exactly their bytes: a row read through a bad entry or past a
// page is reported); a rejection has a message naming the function and writes nothing; a bad page size, a used table
// entry outside the pool, a table too short, a view the header forbids or an overlap of state/out with an input is
// never accepted; an accepted call writes only the rows of state and out; and it gives the bits of
// fst_attn_with_state over the same keys gathered into contiguous K/V (all nth parts together too).
#include "fuzz_support.h"

using namespace fuzz;

namespace {

constexpr int64_t kMaxWork = int64_t(1) << 18; // query rows x keys x (D + DV)

int32_t load_i32(const unsigned char *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// Row bytes of one K/V row of `t` (ne[0] elements).
size_t kv_row_bytes(const fst_tensor &t) {
    const TypeInfo ti = type_info(t.type);
    return ti.block_bytes * size_t(t.ne[0] / ti.block_elems);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Reader in(data, size);
    Memory mem;
    const bool part = in.u8() & 1;
    const char *function = part ? "fst_attn_paged_part" : "fst_attn_paged";
    const fst_type kKvTypes[] = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0};
    const std::initializer_list<fst_type> kv_types = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0,
                                                      FST_TYPE_Q4_0};
    const fst_type tk = kKvTypes[in.u8() % 5], tv = kKvTypes[in.u8() % 5];
    int64_t D = 32 * (1 + in.u8() % 4), DV = 32 * (1 + in.u8() % 4);
    int64_t n_q = 1 + in.u8() % 6;
    // A KV-heads byte of 248 or more (1 in 32) makes a long decode: a table 4 times as long and keys past several
    // chunks, so that the keys are not cut into pieces for the threads and row groups take several chunks (each with
    // its own page pointers) per kernel call (attention/tile.cpp's spans); up to 64 times the usual work. 248-251: 32
    // KV heads of 1-4 query rows, D = DV = 32; 252-255: 2 KV heads, D = DV = 128, the model's head size, whose V rows
    // take the kernels' whole-row passes. The bytes read stay the same, so saved inputs keep their meaning unless that
    // byte was 252 or more.
    const uint8_t kv_heads = in.u8();
    const bool long_decode = kv_heads >= 248, long_wide = kv_heads >= 252;
    const int64_t n_head_kv = long_decode ? (long_wide ? 2 : 32) : 1 + kv_heads % 3, n_head = n_head_kv * (1 + in.u8() % 4);
    int64_t n_seq_kv = 1 + in.u8() % 2, n_seq = n_seq_kv * (1 + in.u8() % 2);
    if (long_decode) D = DV = long_wide ? 128 : 32, n_q = 1, n_seq_kv = n_seq = 1;
    std::string must_reject;
    int64_t page_keys = int64_t(1) << (in.u8() % 7);
    if (in.rare()) page_keys = in.pick<int64_t>({24, 3, 48, 12});
    const int64_t n_pages = 1 + in.u8() % 12;
    const int64_t n_table = (long_decode ? 4 : 1) *
                            (1 + (in.u8() % 48) * std::max<int64_t>(1, 32 / std::max<int64_t>(page_keys, 1))); // small pages: long tables
    int64_t n_kv = std::min<int64_t>(in.u16() % (long_decode ? 4600 : 1500), n_table * page_keys); // up to 5 chunks
    const int64_t rows = n_q * n_head * n_seq;
    n_kv = std::min(n_kv, (long_decode ? 64 : 1) * kMaxWork / (rows * (D + DV)));
    if (in.rare()) {
        const uint8_t c = in.u8() % 3;
        if (c == 0 && n_table * page_keys < 4000) {
            n_kv = n_table * page_keys + 1 + in.u8() % 16; // more keys than the table lists
        } else if (c == 2) {
            // Near the int64 limit: refused, as too many keys or (just below 2^62) as more than the table lists.
            n_kv = in.pick<int64_t>({std::numeric_limits<int64_t>::max(), int64_t(1) << 62, (int64_t(1) << 62) - 1});
            if (n_kv >= int64_t(1) << 62) must_reject = "n_kv >= 2^62";
        } else {
            n_kv = -1;
            must_reject = "n_kv < 0";
        }
    }
    const uint8_t features = in.u8();
    const bool has_mask = features & 1, has_sinks = features & 2, causal = features & 4;
    const Fill fill = (features & 0xe0) == 0xe0 ? Fill::Raw : Fill::Finite;
    Rng rng(in.u64());

    fst_attn_params p = fst_attn_default_params();
    p.scale = in.pick<float>({0.125f, 1.0f, 0.01f});
    p.n_threads = 1 + (in.u8() & 1);
    set_enum(p.isa, in.u8() % 4);
    if (causal) {
        p.virtual_mask = FST_MASK_CAUSAL;
        p.q_pos0 = std::min(std::max<int64_t>(n_kv, 0), int64_t(1) << 62) - n_q + int64_t(in.u8() % 5) - 2;
    }

    View q = make_view(in, mem, rng, fill, FST_TYPE_F32, {D, n_q, n_head, n_seq}, {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16});
    View k = make_view(in, mem, rng, fill, tk, {D, page_keys, n_head_kv, n_pages}, kv_types, 1u << 3);
    View v = make_view(in, mem, rng, fill, tv, {DV, page_keys, n_head_kv, n_pages}, kv_types, 1u << 3);
    View table = make_view(in, mem, rng, fill, FST_TYPE_I32, {n_table, n_seq_kv, 1, 1}, {FST_TYPE_I32}, 1u << 0);
    // The entries: a page of the pool each; rarely one entry outside it (negative, or past the last page).
    int64_t bad_entry = -1, bad_page = 0; // which entry (i) and its value
    if (table.backing == Backing::Exact && table.reject_reason.empty() && table.t.ne[0] > 0 && table.t.ne[1] > 0) {
        // (The view's own extents: a hostile edit may have changed them.)
        for (int64_t s = 0; s < table.t.ne[1]; ++s)
            for (int64_t i = 0; i < table.t.ne[0]; ++i) {
                const int32_t page = int32_t(rng.next() % uint64_t(n_pages));
                std::memcpy(static_cast<unsigned char *>(table.t.data) + i * table.t.nb[0] + s * table.t.nb[1], &page, 4);
            }
        if (in.rare()) {
            const int64_t i = in.u8() % table.t.ne[0], s = in.u8() % table.t.ne[1];
            const int32_t bad = in.pick<int32_t>({-1, int32_t(n_pages), std::numeric_limits<int32_t>::max(),
                                                  std::numeric_limits<int32_t>::min()});
            std::memcpy(static_cast<unsigned char *>(table.t.data) + i * table.t.nb[0] + s * table.t.nb[1], &bad, 4);
            bad_entry = i;
            bad_page = bad;
        }
    }
    View mask, sinks;
    if (has_mask) {
        const int64_t m2 = divisor_of(n_head, in), m3 = divisor_of(n_seq, in);
        mask = make_view(in, mem, rng, fill, FST_TYPE_F16, {std::max<int64_t>(n_kv, 0), n_q, m2, m3},
                         {FST_TYPE_F16, FST_TYPE_F32}, 1u << 0);
    }
    if (has_sinks) sinks = make_view(in, mem, rng, fill, FST_TYPE_F32, {n_head, 1, 1, 1}, {FST_TYPE_F32});
    View state = make_view(in, mem, rng, fill, FST_TYPE_F32, {2, n_head, n_q, n_seq}, {FST_TYPE_F32});
    View out = make_view(in, mem, rng, fill, FST_TYPE_F32, {DV, n_head, n_q, n_seq}, {FST_TYPE_F32});
    if (in.rare()) {
        const uint8_t a = in.u8();
        View *written = (a & 1) ? &state : &out;
        const View *targets[] = {&q, &k, &v, &table};
        alias_into(*written, *targets[(a >> 1) % 4], mem, in);
    }
    int nth = 1 + in.u8() % 3, ith = in.u8() % nth;

    const View *all[] = {&q, &k, &v, &table, &mask, &sinks, &state, &out};
    for (const View *w : all)
        if (w->backing == Backing::TooBig) return 0;
    if (fill == Fill::Finite) make_states_valid(state, rng);
    // Judged from the views as passed (a hostile edit may have changed their extents).
    const int64_t pk_seen = k.t.ne[1];
    if ((pk_seen < 1 || (pk_seen & (pk_seen - 1)) != 0) && must_reject.empty())
        must_reject = "page size " + std::to_string(pk_seen);
    // ceil(a / b) for a >= 0, b > 0, without the overflow of a + b - 1 (a hostile edit may make either huge)
    auto ceil_div = [](int64_t a, int64_t b) { return a / b + (a % b != 0); };
    if (pk_seen > 0 && n_kv > 0 && table.t.ne[0] >= 0 && table.t.ne[0] < ceil_div(n_kv, pk_seen) && must_reject.empty())
        must_reject = "a page table too short";
    const int64_t pages_used = n_kv > 0 && k.t.ne[1] > 0 ? ceil_div(n_kv, k.t.ne[1]) : 0;
    if (bad_entry >= 0 && bad_entry < pages_used && (bad_page < 0 || bad_page >= k.t.ne[3]) && must_reject.empty())
        must_reject = "a page index outside the pool";
    const char *names[] = {"q", "kv.k", "kv.v", "kv.page_table", "mask", "sinks", "state", "out"};
    const bool present[] = {true, true, true, true, has_mask, has_sinks, true, true};
    for (int i = 0; i < 8; ++i)
        if (present[i] && !all[i]->reject_reason.empty())
            must_reject = std::string(names[i]) + ": " + all[i]->reject_reason; // the view's reason wins
    for (int i = 0; i < 6; ++i)
        for (const View *w : {&state, &out})
            if (present[i] && overlaps(w->t, all[i]->t) && must_reject.empty())
                must_reject = std::string(w == &state ? "state" : "out") + " overlaps " + names[i];
    if (overlaps(state.t, out.t) && must_reject.empty()) must_reject = "state overlaps out";

    const fst_paged_kv kv{&k.t, &v.t, &table.t, n_kv};
    const fst_tensor *mask_arg = has_mask ? &mask.t : nullptr, *sinks_arg = has_sinks ? &sinks.t : nullptr;
    auto call = [&](int i, int n) {
        return part ? fst_attn_paged_part(&p, &q.t, &kv, mask_arg, sinks_arg, &state.t, &out.t, i, n)
                    : fst_attn_paged(&p, &q.t, &kv, mask_arg, sinks_arg, &state.t, &out.t);
    };
    if (verbose())
        std::fprintf(stderr, "%s page_keys %lld n_pages %lld n_table %lld n_kv %lld ith %d nth %d%s%s\n", function,
                     (long long)page_keys, (long long)n_pages, (long long)n_table, (long long)n_kv, ith, nth,
                     must_reject.empty() ? "" : "; must reject: ", must_reject.c_str());

    if (!judged_call(mem, function, must_reject, [&] { return call(ith, nth); })) return 0;
    check_untouched(mem, {&state, &out}, function);
    if (part)
        for (int i = 0; i < nth; ++i)
            if (i != ith && call(i, nth) != FST_OK) fail("part " + std::to_string(i) + " failed");
    if (fill == Fill::Finite) check_finite_result(state, out, function);
    const std::vector<unsigned char> got_state(mem.data(state.block), mem.data(state.block) + mem.size(state.block));
    const std::vector<unsigned char> got_out(mem.data(out.block), mem.data(out.block) + mem.size(out.block));

    // The same keys gathered into contiguous K/V: fst_attn_with_state must give the same bits. (Extents from the views
    // the call accepted.)
    const int64_t pk = k.t.ne[1], n_head_kv_seen = k.t.ne[2], n_seq_kv_seen = table.t.ne[1];
    const size_t k_row = kv_row_bytes(k.t), v_row = kv_row_bytes(v.t);
    std::vector<unsigned char> kc(k_row * size_t(n_kv * n_head_kv_seen * n_seq_kv_seen) + 1),
        vc(v_row * size_t(n_kv * n_head_kv_seen * n_seq_kv_seen) + 1);
    for (int64_t s = 0; s < n_seq_kv_seen; ++s)
        for (int64_t h = 0; h < n_head_kv_seen; ++h)
            for (int64_t j = 0; j < n_kv; ++j) {
                const int32_t page = load_i32(static_cast<const unsigned char *>(table.t.data) +
                                              (j / pk) * table.t.nb[0] + s * table.t.nb[1]);
                const size_t at = size_t((s * n_head_kv_seen + h) * n_kv + j);
                const size_t in_page = size_t(j % pk), hs = size_t(h), ps = size_t(page);
                std::memcpy(kc.data() + at * k_row,
                            static_cast<const unsigned char *>(k.t.data) + ps * k.t.nb[3] + hs * k.t.nb[2] + in_page * k.t.nb[1], k_row);
                std::memcpy(vc.data() + at * v_row,
                            static_cast<const unsigned char *>(v.t.data) + ps * v.t.nb[3] + hs * v.t.nb[2] + in_page * v.t.nb[1], v_row);
            }
    const fst_tensor kt = fst_tensor_contiguous(k.t.type, k.t.ne[0], n_kv, n_head_kv_seen, n_seq_kv_seen, kc.data());
    const fst_tensor vt = fst_tensor_contiguous(v.t.type, v.t.ne[0], n_kv, n_head_kv_seen, n_seq_kv_seen, vc.data());
    mem.restore(state.block);
    mem.restore(out.block);
    if (fst_attn_with_state(&p, &q.t, &kt, &vt, mask_arg, sinks_arg, &state.t, &out.t) != FST_OK)
        fail(std::string("the contiguous call failed: ") + fst_last_error());
    if (std::memcmp(got_state.data(), mem.data(state.block), got_state.size()) != 0 ||
        std::memcmp(got_out.data(), mem.data(out.block), got_out.size()) != 0)
        fail(std::string(function) + ": not the bits of fst_attn_with_state over the gathered keys");
    return 0;
}
