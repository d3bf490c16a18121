// The KV cache (fst_cache_*, docs/cache.md) under libFuzzer. The first byte picks a mode:
//   0 "ops":  the input builds a small config (1-2 layers, 1-2 KV heads, D/DV 32 or 64, 1-3 tiers with any types and
//             capacities, n_keep, max_tokens, migrate_chunk, maybe a file-backed last tier) and runs a list of
//             operations on it: appends (any sizes, types, layouts, hostile views), attention (causal, sliding window,
//             softcap, ALiBi, sinks), stats, segments, save + load, and loads of a corrupted, cut or extended save.
//   1 "file": the rest of the input is a cache file, loaded with and without a file_tier_path.
//   2 "file, checksums fixed": as 1, but the harness first rewrites the header's size and every CRC-32 (written here
//             from docs/cache.md), so mutations get past the checksums into the config and layer checks.
// Checked: no sanitizer report; a failed call has a known status and a fresh "<function>: ..." message and changes
// nothing (tokens, next position, input buffers); loading gives FST_OK, FST_ERR_CORRUPT, FST_ERR_UNSUPPORTED or
// FST_ERR_IO, and exactly FST_ERR_CORRUPT when a saved file is changed (any byte: every byte is under a CRC), cut or
// extended; a loaded cache has the saved config, tokens and stats and attends bit for bit like the saved one;
// n_tokens is the sum of the stats and after N appends equals what n_keep / max_tokens keep; the segments hold
// exactly the kept positions, oldest first, ending at next_pos - 1; fst_cache_attn gives the bits of
// fst_attn_segments over fst_cache_segments; finite inputs give valid states and finite outputs.
#include "fuzz_cache_files.h"
#include "fuzz_support.h"

using namespace fuzz;

namespace {

constexpr int kMaxLayers = 2;

// Everything observable about a cache, for comparing a loaded copy with its original.
struct Snapshot {
    std::vector<int64_t> n_tokens, next_pos;
    std::vector<std::vector<fst_cache_tier_stats>> stats;
};

int64_t stats_sum(const std::vector<fst_cache_tier_stats> &s) {
    int64_t n = 0;
    for (const auto &e : s) n += e.n_tokens;
    return n;
}

// Tokens, next position and stats of every layer; checks that the stats add up to n_tokens.
Snapshot observe(fst_cache *cache, const fst_cache_config &c, const char *what) {
    Snapshot s;
    for (int32_t l = 0; l < c.n_layer; ++l) {
        int64_t n = -1, next = -1;
        if (fst_cache_n_tokens(cache, l, &n, &next) != FST_OK) fail(std::string(what) + ": n_tokens failed");
        std::vector<fst_cache_tier_stats> st(size_t(c.n_tiers) + 1);
        if (fst_cache_stats(cache, l, st.data(), c.n_tiers + 1) != FST_OK)
            fail(std::string(what) + ": stats failed: " + fst_last_error());
        if (stats_sum(st) != n || n < 0 || next < n)
            fail(std::string(what) + ": n_tokens " + std::to_string(n) + ", stats sum " + std::to_string(stats_sum(st)) +
                 ", next_pos " + std::to_string(next));
        for (int i = 0; i < c.n_tiers; ++i)
            if (enum_int(st[size_t(i)].type) != enum_int(c.tiers[i].type) ||
                (st[size_t(i)].capacity > 0 && st[size_t(i)].n_tokens > st[size_t(i)].capacity))
                fail(std::string(what) + ": stats of tier " + std::to_string(i) + " disagree with the config");
        s.n_tokens.push_back(n);
        s.next_pos.push_back(next);
        s.stats.push_back(std::move(st));
    }
    return s;
}

// The positions the segments cover, oldest first, after checking each segment's views against the config.
std::vector<int64_t> segment_positions(fst_cache *cache, const fst_cache_config &c, int32_t layer) {
    int64_t count = -1;
    if (fst_cache_segments(cache, layer, nullptr, nullptr, 0, &count) != FST_OK || count < 0)
        fail("segments: counting failed");
    // Too small an array (when count > 0): nothing is written, the count comes back.
    std::vector<fst_segment> seg(size_t(count) + 1);
    std::vector<fst_tensor> views(2 * (size_t(count) + 1));
    std::memset(seg.data(), 0xab, seg.size() * sizeof(fst_segment));
    int64_t again = -1;
    if (count > 0) {
        if (fst_cache_segments(cache, layer, seg.data(), views.data(), count - 1, &again) != FST_OK || again != count)
            fail("segments: a too small array was not answered with the count");
        for (const unsigned char *p = reinterpret_cast<const unsigned char *>(seg.data()),
                                 *e = p + seg.size() * sizeof(fst_segment);
             p < e; ++p)
            if (*p != 0xab) fail("segments: a too small array was written");
    }
    if (fst_cache_segments(cache, layer, seg.data(), views.data(), count, &again) != FST_OK || again != count)
        fail("segments: the count changed");
    std::vector<int64_t> pos;
    for (int64_t i = 0; i < count; ++i) {
        const fst_segment &g = seg[size_t(i)];
        if (g.k != &views[size_t(2 * i)] || g.v != &views[size_t(2 * i + 1)] || g.mask || g.kv_pos)
            fail("segments: views or masks not as documented");
        if (g.k->ne[0] != c.head_dim_k || g.v->ne[0] != c.head_dim_v || g.k->ne[2] != c.n_head_kv ||
            g.v->ne[2] != c.n_head_kv || g.k->ne[1] != g.v->ne[1] || g.k->ne[1] < 1 || g.k->ne[3] != 1)
            fail("segments: " + describe("k", *g.k) + " " + describe("v", *g.v));
        for (int64_t j = 0; j < g.k->ne[1]; ++j) pos.push_back(g.kv_pos0 + j);
    }
    return pos;
}

// The positions a layer keeps after next_pos appended tokens (docs/cache.md, "Attention sinks and streaming").
std::vector<int64_t> kept_positions(const fst_cache_config &c, int64_t next_pos) {
    std::vector<int64_t> pos;
    const int64_t keep = std::min(next_pos, c.n_keep);
    for (int64_t p = 0; p < keep; ++p) pos.push_back(p);
    const int64_t from = c.max_tokens > 0 ? std::max(c.n_keep, next_pos - (c.max_tokens - c.n_keep)) : keep;
    for (int64_t p = from; p < next_pos; ++p) pos.push_back(p);
    return pos;
}

// One attention call's arguments with real buffers: q [D, n_q, n_head, 1], sinks, state, out.
struct AttnCall {
    Memory mem;
    fst_attn_params p = fst_attn_default_params();
    View q, sinks, state, out;
    bool has_sinks = false;
    bool skip = false; // a view too big to back
};

void decode_attn(Reader &in, Rng &rng, AttnCall &a, const fst_cache_config &c, int64_t next_pos) {
    const int64_t n_q = 1 + in.u8() % 4, n_head = int64_t(c.n_head_kv) * (1 + in.u8() % 2);
    a.p.n_threads = 1 + (in.u8() & 1);
    a.p.scale = in.pick<float>({0.125f, 1.0f, 0.01f, 4.0f});
    a.p.softcap = in.pick<float>({0.0f, 0.0f, 5.0f, 30.0f, -1.0f});
    a.p.max_bias = in.pick<float>({0.0f, 0.0f, 8.0f});
    set_enum(a.p.virtual_mask, in.pick<int>({FST_MASK_NONE, FST_MASK_CAUSAL, FST_MASK_SLIDING_WINDOW, 7}));
    a.p.window = in.pick<int64_t>({4, 1, 16, 100, 0});
    a.p.q_pos0 = in.pick<int64_t>({next_pos - n_q, next_pos - 1, 0, next_pos / 2, int64_t(1) << 61, -5});
    a.p.kv_pos0 = in.pick<int64_t>({0, 12345}); // ignored by the cache
    a.q = make_view(in, a.mem, rng, Fill::Finite, in.pick<fst_type>({FST_TYPE_F32, FST_TYPE_F16}),
                    {c.head_dim_k, n_q, n_head, 1}, {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16});
    a.has_sinks = in.u8() & 1;
    if (a.has_sinks) a.sinks = make_view(in, a.mem, rng, Fill::Finite, FST_TYPE_F32, {n_head, 1, 1, 1}, {FST_TYPE_F32});
    a.state = make_view(in, a.mem, rng, Fill::Finite, FST_TYPE_F32, {2, n_head, n_q, 1}, {FST_TYPE_F32});
    a.out = make_view(in, a.mem, rng, Fill::Finite, FST_TYPE_F32, {c.head_dim_v, n_head, n_q, 1}, {FST_TYPE_F32});
    for (const View *v : {&a.q, &a.sinks, &a.state, &a.out})
        if (v->backing == Backing::TooBig) a.skip = true;
    make_states_valid(a.state, rng);
}

// fst_cache_attn, checked: a failure writes nothing; success writes only state/out rows, gives valid finite rows
// when the stored K/V are finite (always in "ops"; a loaded file may hold NaN), and equals fst_attn_segments over
// fst_cache_segments bit for bit. Returns the status.
fst_status run_attn(fst_cache *cache, int32_t layer, AttnCall &a, bool layer_valid, bool finite_kv) {
    if (a.skip) return FST_ERR_INVALID_ARGUMENT;
    const fst_tensor *sinks = a.has_sinks ? &a.sinks.t : nullptr;
    a.mem.snapshot();
    prime_last_error("fst_cache_attn");
    const fst_status st = fst_cache_attn(cache, &a.p, layer, &a.q.t, sinks, &a.state.t, &a.out.t);
    if (st != FST_OK) {
        check_rejection(st, "fst_cache_attn");
        check_untouched(a.mem, {}, "fst_cache_attn");
        return st;
    }
    note_accepted("fst_cache_attn");
    if (!layer_valid) fail("fst_cache_attn accepted a bad layer index");
    for (const View *v : {&a.q, &a.sinks, &a.state, &a.out})
        if ((v != &a.sinks || a.has_sinks) && !v->reject_reason.empty())
            fail("fst_cache_attn accepted an invalid view: " + v->reject_reason);
    check_untouched(a.mem, {&a.state, &a.out}, "fst_cache_attn");
    if (finite_kv) check_finite_result(a.state, a.out, "fst_cache_attn");

    // The same call scheduled by hand over the cache's segments.
    std::vector<unsigned char> state_after(a.mem.data(a.state.block), a.mem.data(a.state.block) + a.mem.size(a.state.block));
    std::vector<unsigned char> out_after(a.mem.data(a.out.block), a.mem.data(a.out.block) + a.mem.size(a.out.block));
    a.mem.restore(a.state.block);
    a.mem.restore(a.out.block);
    int64_t n = 0;
    if (fst_cache_segments(cache, layer, nullptr, nullptr, 0, &n) != FST_OK) fail("segments failed");
    std::vector<fst_segment> seg(size_t(n) + 1);
    std::vector<fst_tensor> views(2 * size_t(n) + 2);
    if (fst_cache_segments(cache, layer, seg.data(), views.data(), n, &n) != FST_OK) fail("segments failed");
    if (fst_attn_segments(&a.p, &a.q.t, seg.data(), n, sinks, &a.state.t, &a.out.t) != FST_OK)
        fail(std::string("fst_attn_segments rejected the cache's segments: ") + fst_last_error());
    if (std::memcmp(state_after.data(), a.mem.data(a.state.block), state_after.size()) != 0 ||
        std::memcmp(out_after.data(), a.mem.data(a.out.block), out_after.size()) != 0)
        fail("fst_cache_attn differs from fst_attn_segments over fst_cache_segments");
    return st;
}

// The harness's reading of the documented config rules (flashstate.h, docs/cache.md): 1 valid, 0 invalid,
// -1 either (the header and the docs differ on a bounded last tier smaller than migrate_chunk).
int config_valid(const fst_cache_config &c) {
    // The library's upper bounds (65536 layers and KV heads, 2^20 dims, 2^40 tokens) are not in the header.
    if (c.n_layer > 65536 || c.n_head_kv > 65536 || c.head_dim_k > (1 << 20) || c.head_dim_v > (1 << 20)) return -1;
    if (c.n_layer < 1 || c.n_head_kv < 1 || c.head_dim_k < 1 || c.head_dim_v < 1 || c.n_tiers < 1 ||
        c.n_tiers > FST_CACHE_MAX_TIERS || c.migrate_chunk < 1 || c.n_keep < 0 || c.max_tokens < 0 ||
        (c.max_tokens > 0 && c.max_tokens <= c.n_keep))
        return 0;
    const int last = c.n_tiers - 1;
    int verdict = 1;
    for (int i = 0; i < c.n_tiers; ++i) {
        const fst_cache_tier &t = c.tiers[i];
        const int type = enum_int(t.type);
        const bool quantized = type == FST_TYPE_Q8_0 || type == FST_TYPE_Q4_0;
        const bool plain = type == FST_TYPE_F32 || type == FST_TYPE_F16;
        if (i == 0 ? (!plain || t.path) : t.path ? (i != last || !(plain || quantized || type == FST_TYPE_BF16)) : !quantized)
            return 0;
        if (t.path && t.path[0] == '\0') return 0;
        if (quantized && (c.head_dim_k % 32 || c.head_dim_v % 32)) return 0;
        if (t.capacity < 0) return 0;
        if (i < last && t.capacity < c.migrate_chunk && !(i == 0 && t.capacity == 0)) return 0;
        if (i == last && t.capacity > 0) {
            if (c.max_tokens == 0 || t.capacity < c.max_tokens - c.n_keep) return 0;
            if (t.capacity < c.migrate_chunk) verdict = -1;
        }
    }
    return verdict;
}

fst_cache_config decode_config(Reader &in) {
    fst_cache_config c = fst_cache_default_config();
    c.n_layer = 1 + in.u8() % kMaxLayers;
    c.n_head_kv = 1 + in.u8() % 2;
    c.head_dim_k = in.pick<int64_t>({32, 64});
    c.head_dim_v = in.pick<int64_t>({32, 64});
    c.n_tiers = 1 + in.u8() % 3;
    c.migrate_chunk = in.pick<int64_t>({16, 8, 1, 5, 32});
    for (int i = 0; i < c.n_tiers; ++i) {
        fst_cache_tier &t = c.tiers[i];
        const bool last = i == c.n_tiers - 1;
        set_enum(t.type, i == 0 ? in.pick<int>({FST_TYPE_F16, FST_TYPE_F32}) : in.pick<int>({FST_TYPE_Q8_0, FST_TYPE_Q4_0}));
        t.capacity = last ? in.pick<int64_t>({0, 0, 64, 100}) : in.pick<int64_t>({32, 16, 64, 0, 8});
        t.path = nullptr;
        if (last && i > 0 && (in.u8() & 1)) {
            t.path = paths().tier.c_str();
            set_enum(t.type, in.pick<int>({FST_TYPE_Q8_0, FST_TYPE_F16, FST_TYPE_Q4_0, FST_TYPE_F32, FST_TYPE_BF16}));
        }
    }
    c.n_keep = in.pick<int64_t>({0, 4, 1, 16});
    c.max_tokens = in.pick<int64_t>({0, 0, 40, 100, 20});
    // Rarely: a field no valid config has (or a valid one the plain choices never make).
    for (int n = 0; n < 2 && in.rare(); ++n) {
        const int i = in.u8() % std::clamp(c.n_tiers, 1, FST_CACHE_MAX_TIERS); // n_tiers may be edited already
        switch (in.u8() % 10) {
        case 0: c.n_layer = in.pick<int32_t>({0, -1, 1 << 17}); break;
        case 1: c.n_head_kv = in.pick<int32_t>({0, -3}); break;
        case 2: c.head_dim_k = in.pick<int64_t>({33, 0, -32, 48}); break;
        case 3: c.head_dim_v = in.pick<int64_t>({40, 0, int64_t(1) << 30}); break;
        case 4: c.n_tiers = in.pick<int32_t>({0, 9, -1}); break;
        case 5: set_enum(c.tiers[i].type, any_type_code(in)); break;
        case 6: c.tiers[i].capacity = in.pick<int64_t>({-1, 1, 7, 4}); break;
        case 7: c.tiers[i].path = in.pick<const char *>({paths().tier.c_str(), "", "/nonexistent-dir/tier"}); break;
        case 8: c.migrate_chunk = in.pick<int64_t>({0, -1, 1000}); break;
        case 9: c.n_keep = in.pick<int64_t>({-1, 40, 100}); c.max_tokens = in.pick<int64_t>({40, -1, 1}); break;
        }
    }
    return c;
}

// One append: k [D, n, H], v [DV, n, H] from the input (any layout, rarely a wrong extent or a hostile view).
void op_append(Reader &in, Rng &rng, fst_cache *cache, const fst_cache_config &c, std::vector<int64_t> &appended) {
    Memory mem;
    const int32_t layer = in.rare() ? in.pick<int32_t>({-1, c.n_layer, INT32_MAX}) : int32_t(in.u8() % c.n_layer);
    const int64_t n = in.pick<int64_t>({1, 5, 16, 33, 1 + in.u8() % 128, 0});
    std::array<int64_t, 4> ne_k{c.head_dim_k, n, c.n_head_kv, 1}, ne_v{c.head_dim_v, n, c.n_head_kv, 1};
    if (in.rare()) {
        const uint8_t w = in.u8() % 5;
        std::array<int64_t, 4> &ne = (w & 1) ? ne_v : ne_k;
        if (w < 2) ne[0] += 32;
        else if (w < 4) ne[2] += 1;
        else ne_v[1] += 1;
    }
    View k = make_view(in, mem, rng, Fill::Finite, in.pick<fst_type>({FST_TYPE_F32, FST_TYPE_F16}), ne_k,
                       {FST_TYPE_F32, FST_TYPE_F16});
    View v = make_view(in, mem, rng, Fill::Finite, in.pick<fst_type>({FST_TYPE_F16, FST_TYPE_F32}), ne_v,
                       {FST_TYPE_F32, FST_TYPE_F16});
    if (k.backing == Backing::TooBig || v.backing == Backing::TooBig) return;
    // Judged on the final descriptors (a hostile edit may have undone a wrong extent).
    std::string wrong = !k.reject_reason.empty() ? k.reject_reason : v.reject_reason;
    const fst_tensor &kt = k.t, &vt = v.t;
    if (kt.ne[0] != c.head_dim_k || vt.ne[0] != c.head_dim_v || kt.ne[2] != c.n_head_kv || vt.ne[2] != c.n_head_kv ||
        kt.ne[3] != 1 || vt.ne[3] != 1 || vt.ne[1] != kt.ne[1] || kt.ne[1] < 1)
        wrong = describe("k", kt) + " " + describe("v", vt) + " do not fit the cache";
    const bool layer_ok = layer >= 0 && layer < c.n_layer;
    int64_t n0 = 0, next0 = 0;
    if (layer_ok) fst_cache_n_tokens(cache, layer, &n0, &next0);
    mem.snapshot();
    prime_last_error("fst_cache_append");
    const fst_status st = fst_cache_append(cache, layer, &k.t, &v.t);
    check_untouched(mem, {}, "fst_cache_append");
    if (st != FST_OK) {
        check_rejection(st, "fst_cache_append");
        int64_t n1 = -1, next1 = -1;
        if (layer_ok && (fst_cache_n_tokens(cache, layer, &n1, &next1) != FST_OK || n1 != n0 || next1 != next0))
            fail("a failed fst_cache_append changed the layer");
        return;
    }
    note_accepted("fst_cache_append");
    if (!layer_ok || !wrong.empty()) fail("fst_cache_append accepted an invalid call: " + (layer_ok ? wrong : "layer"));
    appended[size_t(layer)] += k.t.ne[1];
    if (verbose()) std::fprintf(stderr, "appended %lld tokens to layer %d\n", (long long)k.t.ne[1], layer);
}

// Save, then load back: the same config, tokens and stats, and the same attention bits.
void op_save_load(Reader &in, Rng &rng, fst_cache *cache, const fst_cache_config &c) {
    prime_last_error("fst_cache_save");
    const fst_status st = fst_cache_save(cache, paths().save.c_str());
    if (st != FST_OK) {
        check_rejection(st, "fst_cache_save");
        if (st != FST_ERR_IO) fail(std::string("fst_cache_save failed: ") + fst_last_error());
        return;
    }
    const bool has_file_tier = c.tiers[c.n_tiers - 1].path != nullptr;
    struct RemoveSave {
        ~RemoveSave() { std::remove(paths().save.c_str()); }
    } remove_save;
    // NULL would reuse the original's path, which it still holds: that must be refused.
    const bool use_null = has_file_tier && (in.u8() & 1);
    fst_cache *loaded = nullptr;
    prime_last_error("fst_cache_load");
    const fst_status lst = fst_cache_load(paths().save.c_str(), use_null ? nullptr : paths().tier2.c_str(), &loaded);
    if (use_null) {
        if (lst == FST_OK) fail("fst_cache_load took the file-backed tier of a live cache");
        check_rejection(lst, "fst_cache_load");
        if (lst != FST_ERR_IO) fail(std::string("expected FST_ERR_IO: ") + fst_last_error());
        return;
    }
    if (lst != FST_OK) fail(std::string("fst_cache_load of a fresh save failed: ") + fst_last_error());
    fst_cache_config lc{};
    if (fst_cache_config_of(loaded, &lc) != FST_OK) fail("config_of failed");
    if (lc.n_layer != c.n_layer || lc.n_head_kv != c.n_head_kv || lc.head_dim_k != c.head_dim_k ||
        lc.head_dim_v != c.head_dim_v || lc.n_tiers != c.n_tiers || lc.n_keep != c.n_keep ||
        lc.max_tokens != c.max_tokens || lc.migrate_chunk != c.migrate_chunk)
        fail("the loaded config differs");
    for (int i = 0; i < c.n_tiers; ++i)
        if (enum_int(lc.tiers[i].type) != enum_int(c.tiers[i].type) || lc.tiers[i].capacity != c.tiers[i].capacity ||
            (lc.tiers[i].path == nullptr) != (c.tiers[i].path == nullptr))
            fail("the loaded config's tier " + std::to_string(i) + " differs");
    const Snapshot a = observe(cache, c, "original"), b = observe(loaded, lc, "loaded");
    for (int32_t l = 0; l < c.n_layer; ++l) {
        if (a.n_tokens[size_t(l)] != b.n_tokens[size_t(l)] || a.next_pos[size_t(l)] != b.next_pos[size_t(l)])
            fail("the loaded layer " + std::to_string(l) + " holds other tokens");
        for (int i = 0; i <= c.n_tiers; ++i) {
            const fst_cache_tier_stats &x = a.stats[size_t(l)][size_t(i)], &y = b.stats[size_t(l)][size_t(i)];
            if (enum_int(x.type) != enum_int(y.type) || x.n_tokens != y.n_tokens || x.capacity != y.capacity)
                fail("the loaded stats differ in entry " + std::to_string(i));
        }
        if (segment_positions(cache, c, l) != segment_positions(loaded, lc, l)) fail("the loaded positions differ");
        // The same call on both: bit for bit.
        AttnCall x;
        decode_attn(in, rng, x, c, a.next_pos[size_t(l)]);
        if (!x.skip) {
            x.mem.snapshot();
            const fst_tensor *sinks = x.has_sinks ? &x.sinks.t : nullptr;
            const fst_status s1 = fst_cache_attn(cache, &x.p, l, &x.q.t, sinks, &x.state.t, &x.out.t);
            std::vector<std::vector<unsigned char>> first;
            for (int blk = 0; blk < x.mem.count(); ++blk) {
                first.emplace_back(x.mem.data(blk), x.mem.data(blk) + x.mem.size(blk));
                x.mem.restore(blk);
            }
            const fst_status s2 = fst_cache_attn(loaded, &x.p, l, &x.q.t, sinks, &x.state.t, &x.out.t);
            if (s1 != s2) fail("the loaded cache answers attn with another status");
            for (int blk = 0; blk < x.mem.count(); ++blk)
                if (x.mem.size(blk) && std::memcmp(first[size_t(blk)].data(), x.mem.data(blk), x.mem.size(blk)) != 0)
                    fail("the loaded cache attends differently");
        }
    }
    fst_cache_free(loaded);
}

// A saved file changed at one byte, cut, or extended: always FST_ERR_CORRUPT.
void op_corrupt(Reader &in, fst_cache *cache) {
    if (fst_cache_save(cache, paths().save.c_str()) != FST_OK) return;
    std::vector<unsigned char> d = read_file(paths().save);
    std::remove(paths().save.c_str());
    const uint8_t kind = in.u8() % 3;
    const size_t at = size_t(in.u16()) * 7919 % d.size(); // spread over files longer than 64 KiB too
    if (kind == 0) d[at] ^= uint8_t(1 + in.u8() % 255);
    else if (kind == 1) d.resize(at);
    else d.insert(d.begin() + ptrdiff_t(at), 1 + in.u8() % 8, in.u8());
    if (verbose()) std::fprintf(stderr, "corrupt kind %d at %zu of the file\n", kind, at);
    write_file(paths().bad, d.data(), d.size());
    fst_cache *loaded = nullptr;
    prime_last_error("fst_cache_load");
    const fst_status st = fst_cache_load(paths().bad.c_str(), paths().tier2.c_str(), &loaded);
    if (st == FST_OK) {
        fst_cache_free(loaded);
        fail("fst_cache_load accepted a changed file (kind " + std::to_string(kind) + " at " + std::to_string(at) + ")");
    }
    std::remove(paths().bad.c_str()); // scratch files are removed as soon as they are read: a crash leaves fewer
    check_rejection(st, "fst_cache_load");
    if (st != FST_ERR_CORRUPT) fail(std::string("a changed file gave another status than FST_ERR_CORRUPT: ") + fst_last_error());
}

int run_ops(Reader &in) {
    const fst_cache_config c = decode_config(in);
    Rng rng(in.u64());
    const int valid = config_valid(c);
    if (verbose()) {
        std::fprintf(stderr, "config: %d layers, %d KV heads, D %lld, DV %lld, n_keep %lld, max_tokens %lld, chunk %lld\n",
                     c.n_layer, c.n_head_kv, (long long)c.head_dim_k, (long long)c.head_dim_v, (long long)c.n_keep,
                     (long long)c.max_tokens, (long long)c.migrate_chunk);
        for (int i = 0; i < std::clamp(c.n_tiers, 0, FST_CACHE_MAX_TIERS); ++i)
            std::fprintf(stderr, "  tier %d: type %d, capacity %lld, path %s\n", i, enum_int(c.tiers[i].type),
                         (long long)c.tiers[i].capacity, c.tiers[i].path ? c.tiers[i].path : "NULL");
    }
    fst_cache *cache = nullptr;
    prime_last_error("fst_cache_create");
    const fst_status st = fst_cache_create(&c, &cache);
    if (st != FST_OK) {
        check_rejection(st, "fst_cache_create");
        if (valid == 1 && st != FST_ERR_IO) fail(std::string("fst_cache_create rejected a valid config: ") + fst_last_error());
        return 0;
    }
    if (valid == 0) fail("fst_cache_create accepted an invalid config");
    std::vector<int64_t> appended(size_t(c.n_layer), 0);
    const int n_ops = 1 + in.u8() % 12;
    for (int op = 0; op < n_ops; ++op) {
        const uint8_t kind = in.u8() % 8;
        if (verbose()) std::fprintf(stderr, "op %d: kind %d\n", op, kind);
        const int32_t layer = int32_t(in.u8() % c.n_layer);
        switch (kind) {
        case 0:
        case 1: op_append(in, rng, cache, c, appended); break;
        case 2:
        case 3: {
            int64_t n = 0, next = 0;
            fst_cache_n_tokens(cache, layer, &n, &next);
            AttnCall a;
            const bool bad_layer = in.rare();
            decode_attn(in, rng, a, c, next);
            run_attn(cache, bad_layer ? c.n_layer : layer, a, !bad_layer, true);
            break;
        }
        case 4: {
            // Stats with a wrong count, segments with a negative capacity: rejected.
            fst_cache_tier_stats st2[FST_CACHE_MAX_TIERS + 2];
            prime_last_error("fst_cache_stats");
            const int32_t wrong = in.pick<int32_t>({c.n_tiers, 0, c.n_tiers + 2, -1});
            check_rejection(fst_cache_stats(cache, layer, st2, wrong), "fst_cache_stats");
            int64_t count = 0;
            prime_last_error("fst_cache_segments");
            check_rejection(fst_cache_segments(cache, layer, nullptr, nullptr, -1, &count), "fst_cache_segments");
            break;
        }
        case 5: op_save_load(in, rng, cache, c); break;
        case 6: op_corrupt(in, cache); break;
        case 7: break; // only the checks below
        }
        // After every operation: the counts add up, and every layer holds exactly what its appends should leave.
        const Snapshot s = observe(cache, c, "cache");
        for (int32_t l = 0; l < c.n_layer; ++l) {
            if (s.next_pos[size_t(l)] != appended[size_t(l)]) fail("next_pos is not the number of tokens appended");
            const std::vector<int64_t> expected = kept_positions(c, appended[size_t(l)]);
            if (s.n_tokens[size_t(l)] != int64_t(expected.size()))
                fail("layer " + std::to_string(l) + " holds " + std::to_string(s.n_tokens[size_t(l)]) + " tokens, expected " +
                     std::to_string(expected.size()));
            if (kind == 7 || l == layer) {
                if (segment_positions(cache, c, l) != expected) fail("the segments do not hold the kept positions");
            }
        }
    }
    fst_cache_free(cache);
    return 0;
}

// Mode 1 and 2: the bytes as a file.
int run_file(const uint8_t *data, size_t size, bool fix) {
    std::vector<unsigned char> d(data, data + size);
    if (fix) fix_checksums(d);
    const FileConfig fc = peek_config(d);
    if (fc.too_big) return 0;
    write_file(paths().input, d.data(), d.size());
    // Without a file_tier_path only when the saved path is this process's own scratch file.
    const bool null_ok = fc.parsed && (!fc.has_path || fc.path == paths().tier);
    for (int pass = 0; pass < (null_ok ? 2 : 1); ++pass) {
        fst_cache *cache = nullptr;
        prime_last_error("fst_cache_load");
        const fst_status st = fst_cache_load(paths().input.c_str(), pass ? nullptr : paths().tier.c_str(), &cache);
        if (st != FST_OK) {
            check_rejection(st, "fst_cache_load");
            if (st != FST_ERR_CORRUPT && st != FST_ERR_UNSUPPORTED && st != FST_ERR_IO)
                fail(std::string("fst_cache_load: unexpected status: ") + fst_last_error());
            continue;
        }
        note_accepted("fst_cache_load");
        fst_cache_config c{};
        if (fst_cache_config_of(cache, &c) != FST_OK) fail("config_of failed");
        if (config_valid(c) == 0) fail("fst_cache_load accepted an invalid config");
        const Snapshot s = observe(cache, c, "loaded");
        Rng rng(size);
        for (int32_t l = 0; l < c.n_layer; ++l) {
            const std::vector<int64_t> pos = segment_positions(cache, c, l);
            if (int64_t(pos.size()) != s.n_tokens[size_t(l)]) fail("the segments do not cover n_tokens");
            for (size_t i = 0; i < pos.size(); ++i)
                if (pos[i] < 0 || pos[i] >= s.next_pos[size_t(l)] || (i > 0 && pos[i] <= pos[i - 1]))
                    fail("the loaded segments' positions are not increasing below next_pos");
            if (!pos.empty() && pos.back() != s.next_pos[size_t(l)] - 1) fail("the last position is not next_pos - 1");
            Reader tame(nullptr, 0); // every choice plain: a valid query of the loaded shape
            AttnCall a;
            decode_attn(tame, rng, a, c, s.next_pos[size_t(l)]);
            if (run_attn(cache, l, a, true, false) != FST_OK && !a.skip)
                fail(std::string("attn on a loaded cache failed: ") + fst_last_error());
            // One more token.
            Memory mem;
            const View k = make_view(tame, mem, rng, Fill::Finite, FST_TYPE_F32, {c.head_dim_k, 1, c.n_head_kv, 1}, {});
            const View v = make_view(tame, mem, rng, Fill::Finite, FST_TYPE_F32, {c.head_dim_v, 1, c.n_head_kv, 1}, {});
            if (k.backing != Backing::Exact || v.backing != Backing::Exact) continue;
            prime_last_error("fst_cache_append");
            const fst_status ast = fst_cache_append(cache, l, &k.t, &v.t);
            if (ast != FST_OK) {
                check_rejection(ast, "fst_cache_append");
                if (ast != FST_ERR_IO && ast != FST_ERR_OUT_OF_MEMORY)
                    fail(std::string("append to a loaded cache failed: ") + fst_last_error());
                continue;
            }
            int64_t n = 0, next = 0;
            fst_cache_n_tokens(cache, l, &n, &next);
            if (next != s.next_pos[size_t(l)] + 1) fail("append to a loaded cache: next_pos did not advance by 1");
        }
        observe(cache, c, "loaded, after appends");
        fst_cache_free(cache);
    }
    std::remove(paths().input.c_str());
    return 0;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t mode = size ? data[0] % 3 : 0;
    if (mode != 0) return run_file(data + 1, size - 1, mode == 2);
    Reader in(data + (size ? 1 : 0), size ? size - 1 : 0);
    return run_ops(in);
}
