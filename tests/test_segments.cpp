// The central promise (SPEC sections 2 and 4): any split of the KV range, processed in order, in reverse, in a
// random order, as independent partials merged in a random tree, or as one fst_attn_segments call, equals the
// unsplit call to 4e-6 — out and state. Sinks count exactly once; fully masked rows and empty segments leave the bytes untouched.
#include "support/cases.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

using namespace fst_test;

namespace {

const double tolerance = 4e-6;

// A state and its output, initialized to the empty state.
struct Acc {
    Buffer state, out;
    explicit Acc(const Problem &pb) : state(pb.make_state()), out(pb.make_out()) {
        EXPECT_EQ(fst_state_init(&state.t, &out.t), FST_OK) << fst_last_error();
    }
};

void call(const Problem &pb, const Segment &g, bool with_sinks, Acc &acc) {
    fst_attn_params p = g.params();
    fst_tensor q = pb.q();
    EXPECT_EQ(fst_attn_with_state(&p, &q, &g.k, &g.v, g.mask_ptr(), with_sinks ? pb.sinks() : nullptr,
                                  &acc.state.t, &acc.out.t),
              FST_OK)
        << fst_last_error() << " (segment " << g.j0 << "+" << g.n << ")";
}

Acc unsplit(const Problem &pb, bool with_sinks) {
    Acc acc(pb);
    call(pb, pb.segment(0, pb.spec.n_kv), with_sinks, acc);
    return acc;
}

void merge(Acc &a, const Acc &b) {
    EXPECT_EQ(fst_state_merge(&a.state.t, &a.out.t, &b.state.t, &b.out.t), FST_OK) << fst_last_error();
}

// Merges the parts pairwise, picking any two at random each time: a random binary tree in a random order.
Acc merge_tree(std::vector<Acc> parts, std::mt19937 &rng) {
    while (parts.size() > 1) {
        size_t i = rng() % parts.size(), j = rng() % (parts.size() - 1);
        if (j >= i) ++j;
        merge(parts[i], parts[j]);
        parts.erase(parts.begin() + std::ptrdiff_t(j));
    }
    return parts[0];
}

// The worst deviation of a result from the unsplit one: out (SPEC section 4 measure), M and S.
double deviation(const Acc &got, const Acc &expected) {
    StateError e = state_diff(got.state.t, expected.state.t);
    return std::max({rel_diff(got.out.t, expected.out.t), e.m, e.s});
}

// Row (h, r, s) bytes of a state and an output, to check that a call left them alone.
std::vector<unsigned char> row_bytes(const Acc &acc, int64_t h, int64_t r, int64_t s) {
    auto *st = static_cast<const unsigned char *>(acc.state.t.data) + h * acc.state.t.nb[1] + r * acc.state.t.nb[2] +
               s * acc.state.t.nb[3];
    auto *o = static_cast<const unsigned char *>(acc.out.t.data) + h * acc.out.t.nb[1] + r * acc.out.t.nb[2] +
              s * acc.out.t.nb[3];
    const size_t state_size = 2 * sizeof(float), out_size = size_t(acc.out.t.ne[0]) * sizeof(float);
    std::vector<unsigned char> bytes(state_size + out_size);
    std::memcpy(bytes.data(), st, state_size);
    std::memcpy(bytes.data() + state_size, o, out_size);
    return bytes;
}

// How to cut the range: whole, a few pieces, every token alone, or many pieces with empty ones among them.
std::vector<Range> pick_split(std::mt19937 &rng, int64_t n_kv, int mode) {
    switch (mode % 6) {
    case 0: return random_split(rng, n_kv, 1);
    case 1: return random_split(rng, n_kv, 2);
    case 2: return random_split(rng, n_kv, 3);
    case 3: return random_split(rng, n_kv, 7);
    case 4: {
        std::vector<Range> ones;
        for (int64_t j = 0; j < n_kv; ++j) ones.push_back({j, 1});
        if (ones.empty()) ones.push_back({0, 0});
        return ones;
    }
    default: return random_split(rng, n_kv, n_kv / 2 + 3);
    }
}

struct Deviations {
    double in_order = 0, reverse = 0, random_order = 0, tree_sinks_at_end = 0, tree_sinks_in_one = 0, one_call = 0;
    int64_t blind_rows = 0;  // (row, segment) pairs checked to keep their bytes
    double max() const {
        return std::max({in_order, reverse, random_order, tree_sinks_at_end, tree_sinks_in_one, one_call});
    }
    void add(const Deviations &d) {
        in_order = std::max(in_order, d.in_order);
        reverse = std::max(reverse, d.reverse);
        random_order = std::max(random_order, d.random_order);
        tree_sinks_at_end = std::max(tree_sinks_at_end, d.tree_sinks_at_end);
        tree_sinks_in_one = std::max(tree_sinks_in_one, d.tree_sinks_in_one);
        one_call = std::max(one_call, d.one_call);
        blind_rows += d.blind_rows;
    }
};

// Every way of processing one split of one problem, against the unsplit call. In the in-order pass, rows that
// the reference says see nothing in a segment must keep their bytes through that segment's call.
Deviations check_split(const Problem &pb, const std::vector<Range> &ranges, std::mt19937 &rng) {
    const Spec &s = pb.spec;
    std::vector<Segment> segs;
    for (auto [j0, n] : ranges) segs.push_back(pb.segment(j0, n));
    const Acc expected = unsplit(pb, true);
    const size_t n_segs = segs.size();
    const size_t sink_segment = rng() % n_segs;  // sinks go to exactly one call
    Deviations d;

    {
        Acc acc(pb);
        for (size_t i = 0; i < n_segs; ++i) {
            bool sinks_here = i == sink_segment && pb.sinks();
            ref::Result seen = pb.reference(segs[i], false);
            std::vector<std::vector<unsigned char>> before;
            std::vector<size_t> blind;  // rows that see no key of this segment
            for (int64_t sq = 0; sq < s.n_seq; ++sq)
                for (int64_t r = 0; r < s.n_q; ++r)
                    for (int64_t h = 0; h < s.n_head; ++h) {
                        size_t idx = size_t((sq * s.n_q + r) * s.n_head + h);
                        if (seen.S[idx] == 0 && !sinks_here) {
                            blind.push_back(idx);
                            before.push_back(row_bytes(acc, h, r, sq));
                        }
                    }
            call(pb, segs[i], i == sink_segment, acc);
            d.blind_rows += int64_t(blind.size());
            for (size_t b = 0; b < blind.size(); ++b) {
                int64_t h = int64_t(blind[b]) % s.n_head, r = int64_t(blind[b]) / s.n_head % s.n_q,
                        sq = int64_t(blind[b]) / s.n_head / s.n_q;
                EXPECT_EQ(row_bytes(acc, h, r, sq), before[b])
                    << "a row that sees nothing in segment " << segs[i].j0 << "+" << segs[i].n
                    << " changed: head " << h << " row " << r << " seq " << sq;
            }
        }
        d.in_order = deviation(acc, expected);
    }
    {
        Acc acc(pb);
        for (size_t i = n_segs; i-- > 0;) call(pb, segs[i], i == sink_segment, acc);
        d.reverse = deviation(acc, expected);
    }
    {
        std::vector<size_t> order(n_segs);
        std::iota(order.begin(), order.end(), size_t(0));
        std::shuffle(order.begin(), order.end(), rng);
        Acc acc(pb);
        for (size_t i : order) call(pb, segs[i], i == sink_segment, acc);
        d.random_order = deviation(acc, expected);
    }
    {
        std::vector<Acc> parts;
        for (const Segment &g : segs) {
            parts.emplace_back(pb);
            call(pb, g, false, parts.back());
        }
        Acc acc = merge_tree(parts, rng);
        if (pb.sinks()) {
            EXPECT_EQ(fst_state_add_sinks(pb.sinks(), &acc.state.t, &acc.out.t), FST_OK) << fst_last_error();
        }
        d.tree_sinks_at_end = deviation(acc, expected);
    }
    {
        std::vector<Acc> parts;
        for (size_t i = 0; i < n_segs; ++i) {
            parts.emplace_back(pb);
            call(pb, segs[i], i == sink_segment, parts.back());
        }
        d.tree_sinks_in_one = deviation(merge_tree(parts, rng), expected);
    }
    {
        // fst_attn_segments: the whole list in one call, bit for bit the in-order calls with the sinks at the last.
        std::vector<fst_segment> list;
        for (const Segment &g : segs)
            list.push_back(fst_segment{&g.k, &g.v, g.mask_ptr(), g.p.kv_pos0, g.has_kv_pos ? &g.kv_pos : nullptr});
        const fst_attn_params p = pb.params();
        const fst_tensor q = pb.q();
        Acc acc(pb);
        EXPECT_EQ(fst_attn_segments(&p, &q, list.data(), int64_t(list.size()), pb.sinks(), &acc.state.t, &acc.out.t),
                  FST_OK)
            << fst_last_error();
        Acc in_order(pb);
        for (size_t i = 0; i < n_segs; ++i) call(pb, segs[i], i + 1 == n_segs, in_order);
        EXPECT_EQ(acc.state.storage, in_order.state.storage) << "fst_attn_segments differs from the calls in order";
        EXPECT_EQ(acc.out.storage, in_order.out.storage) << "fst_attn_segments differs from the calls in order";
        d.one_call = deviation(acc, expected);
    }
    return d;
}

void print(const std::string &what, const Deviations &d, int n) {
    std::printf("  %-22s in order %.3g  reverse %.3g  random %.3g  tree, sinks added %.3g  tree, sinks in one %.3g  "
                "fst_attn_segments %.3g  (%d problems, %lld blind rows kept)\n",
                what.c_str(), d.in_order, d.reverse, d.random_order, d.tree_sinks_at_end, d.tree_sinks_in_one,
                d.one_call, n, (long long)d.blind_rows);
}

void run_checks(const Spec &spec, uint32_t seed, Deviations &total) {
    Problem pb(spec, seed);
    std::mt19937 rng(seed);
    std::vector<Range> ranges = pick_split(rng, spec.n_kv, int(seed));
    Deviations d = check_split(pb, ranges, rng);
    const std::pair<const char *, double> ways[] = {{"in order", d.in_order},
                                                    {"in reverse", d.reverse},
                                                    {"in random order", d.random_order},
                                                    {"as a tree, sinks added at the end", d.tree_sinks_at_end},
                                                    {"as a tree, sinks in one partial", d.tree_sinks_in_one},
                                                    {"in one fst_attn_segments call", d.one_call}};
    for (auto [way, measured] : ways)
        EXPECT_LE(measured, tolerance) << way << ", seed " << seed << ", " << ranges.size()
                                        << " segments: " << describe(pb.spec);
    total.add(d);
}

} // namespace

TEST(Segments, AnySplitAnyOrderEveryKvType) {
    const int per_pair = 4;
    Deviations overall;
    uint32_t seed = 2000;
    for (fst_type kt : kv_types())
        for (fst_type vt : kv_types()) {
            Deviations pair;
            for (int i = 0; i < per_pair; ++i) {
                std::mt19937 rng(++seed);
                run_checks(random_spec(rng, kt, vt), seed, pair);
            }
            print(std::string("k=") + fst_type_name(kt) + " v=" + fst_type_name(vt), pair, per_pair);
            overall.add(pair);
        }
    print("overall", overall, 25 * per_pair);
    std::printf("  maximum deviation from the unsplit call: %.3g\n", overall.max());
}

// Virtual masks with segment-relative kv_pos0 or sliced position tensors, combined with mask tensors.
TEST(Segments, VirtualMasksAndMaskTensors) {
    Deviations overall;
    uint32_t seed = 3000;
    const int n = 30;
    for (int i = 0; i < n; ++i) {
        std::mt19937 rng(++seed);
        Spec s = random_spec(rng);
        s.virtual_mask = i % 2 ? FST_MASK_CAUSAL : FST_MASK_SLIDING_WINDOW;
        s.window = 1 + int64_t(rng() % uint32_t(std::max<int64_t>(s.n_kv, 1) + 2));
        s.kv_pos0 = int64_t(rng() % 40);
        s.q_pos0 = s.kv_pos0 + s.n_kv - s.n_q + int64_t(rng() % 10) - 6;
        s.q_pos_tensor = i % 3 == 1;
        s.kv_pos_tensor = i % 3 != 0;
        if (i % 4 < 2) {
            s.has_mask = true;
            s.mask_type = i % 4 ? FST_TYPE_F16 : FST_TYPE_F32;
            s.mask_inf_fraction = 0.2;
            s.n_fully_masked_rows = 1;
        }
        make_consistent(s);
        run_checks(s, seed, overall);
    }
    print("virtual masks", overall, n);
}

// Many short segments of one fst_attn_segments call share kernel calls (attention/tile.cpp's batch_length: up to
// 4096 keys of F32/F16/BF16 K/V, 1024 of quantized), each with its own bias columns side by side in the tile's bias
// rows: bit for bit the calls in order. Per-head mask rows with ALiBi give every query row its own bias row, and
// segments of 250 keys fill a batch past one chunk's 1024 columns. 32 KV heads, so that the segments are not spread
// over the threads one work item each (which would leave nothing to share).
TEST(Segments, ShortSegmentsSharingKernelCallsKeepTheirBias) {
    Deviations overall;
    uint32_t seed = 3500;
    for (fst_type t : {FST_TYPE_F16, FST_TYPE_F32, FST_TYPE_Q8_0}) {
        Spec s = spans_decode_spec(t, 3000, 0.3);
        s.m2 = s.n_head;
        s.max_bias = 8.0f;
        Problem pb(s, ++seed);
        std::mt19937 rng(seed);
        std::vector<Range> ranges;
        for (int64_t j = 0; j < s.n_kv; j += 250) ranges.push_back({j, std::min<int64_t>(250, s.n_kv - j)});
        const Deviations d = check_split(pb, ranges, rng);
        EXPECT_LE(d.max(), tolerance) << describe(pb.spec);
        overall.add(d);
    }
    print("short segments, shared", overall, 3);
}

// Sinks passed to exactly one call, or added once at the end, equal the unsplit call with sinks; passing them
// to two calls counts them twice, which must be visible (else the tests above could not catch it).
TEST(Segments, SinksCountExactlyOnce) {
    Spec s;
    s.D = s.DV = 64;
    s.n_q = 3;
    s.n_kv = 64;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.has_sinks = true;
    s.logit_max = 8;
    Problem pb(s, 11);
    for (int64_t h = 0; h < s.n_head; ++h) *pb.sinks_buf.f32(h) = 5.0f + float(h);  // comparable to the logits
    const Acc expected = unsplit(pb, true);
    const Acc without = unsplit(pb, false);
    std::vector<Segment> segs = {pb.segment(0, 20), pb.segment(20, 0), pb.segment(20, 44)};

    for (size_t once = 0; once < segs.size(); ++once) {
        Acc acc(pb);
        for (size_t i = 0; i < segs.size(); ++i) call(pb, segs[i], i == once, acc);
        EXPECT_LE(deviation(acc, expected), tolerance) << "sinks with segment " << once;
    }
    {
        Acc acc(pb);
        for (const Segment &g : segs) call(pb, g, false, acc);
        EXPECT_LE(deviation(acc, without), tolerance);
        EXPECT_EQ(fst_state_add_sinks(pb.sinks(), &acc.state.t, &acc.out.t), FST_OK) << fst_last_error();
        EXPECT_LE(deviation(acc, expected), tolerance);
    }
    // Twice: sinks with the first and the last segment, or added twice.
    double twice_in_calls, twice_added;
    {
        Acc acc(pb);
        for (size_t i = 0; i < segs.size(); ++i) call(pb, segs[i], i != 1, acc);
        twice_in_calls = deviation(acc, expected);
    }
    {
        Acc acc = unsplit(pb, true);
        EXPECT_EQ(fst_state_add_sinks(pb.sinks(), &acc.state.t, &acc.out.t), FST_OK) << fst_last_error();
        twice_added = deviation(acc, expected);
    }
    std::printf("  sinks counted twice deviate by %.3g (in calls) and %.3g (added); once: <= %.1g\n",
                twice_in_calls, twice_added, tolerance);
    EXPECT_GT(twice_in_calls, 1e3 * tolerance);
    EXPECT_GT(twice_added, 1e3 * tolerance);
}

// A row fully masked in one segment keeps its state and output bytes through that call; a row masked everywhere
// stays the empty state to the end.
TEST(Segments, FullyMaskedRowLeavesBytesUnchanged) {
    // n_q 4: 16 rows per tile (the kernels' row groups); 16: 64 rows, tiles of 32 (rows as vector lanes).
    for (int64_t n_q : {4, 16})
    for (fst_type mask_type : {FST_TYPE_F16, FST_TYPE_F32}) {
        SCOPED_TRACE(n_q);
        Spec s;
        s.D = 40;
        s.DV = 24;
        s.n_q = n_q;
        s.n_kv = 60;
        s.n_head = 2;
        s.n_head_kv = 1;
        s.n_seq = 2;
        s.padded = true;
        s.has_mask = true;
        s.mask_type = mask_type;
        s.max_bias = 8;
        Problem pb(s, 21);
        const float hidden = -INFINITY;
        for (int64_t j = 0; j < s.n_kv; ++j) {
            if (j >= 20 && j < 40) pb.set_mask(j, 1, 0, 0, hidden);
            pb.set_mask(j, 3, 0, 0, hidden);
        }
        std::vector<Segment> segs = {pb.segment(0, 20), pb.segment(20, 20), pb.segment(40, 20)};
        Acc acc(pb);
        Acc empty(pb);
        call(pb, segs[0], false, acc);
        std::vector<std::vector<unsigned char>> before;
        for (int64_t sq = 0; sq < s.n_seq; ++sq)
            for (int64_t h = 0; h < s.n_head; ++h) before.push_back(row_bytes(acc, h, 1, sq));
        call(pb, segs[1], false, acc);
        size_t i = 0;
        for (int64_t sq = 0; sq < s.n_seq; ++sq)
            for (int64_t h = 0; h < s.n_head; ++h)
                EXPECT_EQ(row_bytes(acc, h, 1, sq), before[i++]) << "row 1 head " << h << " seq " << sq;
        call(pb, segs[2], false, acc);
        for (int64_t sq = 0; sq < s.n_seq; ++sq)
            for (int64_t h = 0; h < s.n_head; ++h)
                EXPECT_EQ(row_bytes(acc, h, 3, sq), row_bytes(empty, h, 3, sq)) << "row 3 head " << h;
        EXPECT_LE(deviation(acc, unsplit(pb, false)), tolerance);
    }
}

// An empty segment (n_kv == 0) with NULL or garbage data pointers changes no byte of state or out (padding
// included); with sinks, it changes them exactly as fst_state_add_sinks does.
TEST(Segments, EmptySegmentChangesNothingButSinks) {
    uint32_t seed = 4000;
    for (int i = 0; i < 20; ++i) {
        std::mt19937 rng(++seed);
        const auto &types = kv_types();
        Spec s = random_spec(rng, types[size_t(i) % 5], types[size_t(i / 5) % 5]);
        s.has_sinks = true;
        s.padded = i % 2 == 0;
        if (s.n_kv == 0) s.n_kv = 5;
        make_consistent(s);
        Problem pb(s, seed);
        SCOPED_TRACE(describe(pb.spec));
        // Sinks above every logit, so that merging them is visible in every row.
        for (int64_t h = 0; h < s.n_head; ++h) *pb.sinks_buf.f32(h) = float(s.logit_max) + 2.0f;

        Acc acc(pb);
        call(pb, pb.segment(0, s.n_kv / 2), false, acc);  // a state that is not empty (in most rows)
        Segment empty = pb.segment(s.n_kv / 2, 0);
        void *garbage = reinterpret_cast<void *>(uintptr_t(0xdead0000));
        void *data = i % 2 ? nullptr : garbage;
        empty.k.data = empty.v.data = empty.mask.data = empty.kv_pos.data = data;

        const Acc before = acc;
        call(pb, empty, false, acc);
        EXPECT_EQ(acc.state.storage, before.state.storage) << "state bytes changed";
        EXPECT_EQ(acc.out.storage, before.out.storage) << "out bytes changed";

        // From the initial state too.
        Acc fresh(pb);
        const Acc fresh_before = fresh;
        call(pb, empty, false, fresh);
        EXPECT_EQ(fresh.state.storage, fresh_before.state.storage);
        EXPECT_EQ(fresh.out.storage, fresh_before.out.storage);

        // With sinks: exactly the sink merge; padding still untouched.
        Acc with_sinks = before;
        call(pb, empty, true, with_sinks);
        Acc added = before;
        EXPECT_EQ(fst_state_add_sinks(pb.sinks(), &added.state.t, &added.out.t), FST_OK) << fst_last_error();
        EXPECT_LE(deviation(with_sinks, added), 1e-6);
        EXPECT_GT(deviation(with_sinks, before), 10 * tolerance) << "sinks passed with an empty segment ignored";
        for (auto [got, old] : {std::pair{&with_sinks.out, &before.out}, std::pair{&with_sinks.state, &before.state}}) {
            std::vector<bool> covered = covered_bytes(*got);
            for (size_t b = 0; b < covered.size(); ++b) {
                if (!covered[b]) {
                    ASSERT_EQ(got->storage[b], old->storage[b]) << "padding byte " << b << " written";
                }
            }
        }
    }
}
