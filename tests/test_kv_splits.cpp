// Decode with few tiles: the KV range is cut into pieces that run on different threads and are merged with ⊕
// (flash-decoding). The cuts are fixed by the problem, so the bits must not depend on n_threads, on ith/nth, or
// on whether the segments come one call each or in one multi-segment call; and the result must match the double
// reference as any other call does.
#include "reference/reference.h"
#include "support/buffer.h"
#include "support/cases.h"

#include <flashstate/flashstate.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace {

using fst_test::Buffer;
using fst_test::Problem;
using fst_test::Spec;

Spec long_decode(fst_type kv) {
    Spec s;
    s.D = 64;
    s.DV = 64;
    s.n_q = 1;
    s.n_kv = 9000; // 9 chunks of 1024 keys in each of 4 tiles: pieces of 2 chunks (a merge tree each), then one
    s.n_head = 8;
    s.n_head_kv = 4;
    s.k_type = s.v_type = kv;
    s.has_sinks = true;
    s.virtual_mask = FST_MASK_SLIDING_WINDOW;
    s.window = 7000;
    s.q_pos0 = s.n_kv - 1;
    s.logit_max = 30;
    return s;
}

std::vector<unsigned char> run(const Problem &P, int32_t threads, int ith_nth = 0) {
    Buffer state = P.make_state(), out = P.make_out();
    EXPECT_EQ(fst_state_init(&state.t, &out.t), FST_OK);
    fst_attn_params p = P.params();
    p.n_threads = threads;
    const fst_tensor q = P.q(), k = P.k(), v = P.v();
    if (ith_nth == 0) {
        EXPECT_EQ(fst_attn_with_state(&p, &q, &k, &v, P.mask(), P.sinks(), &state.t, &out.t), FST_OK) << fst_last_error();
    } else {
        for (int ith = ith_nth - 1; ith >= 0; --ith) // parts in any order
            EXPECT_EQ(fst_attn_with_state_part(&p, &q, &k, &v, P.mask(), P.sinks(), &state.t, &out.t, ith, ith_nth), FST_OK);
    }
    std::vector<unsigned char> bytes = out.storage;
    bytes.insert(bytes.end(), state.storage.begin(), state.storage.end());
    const ref::Result want = P.reference();
    const double err = ref::rel_error(want, out.t);
    EXPECT_LE(err, 1e-5);
    return bytes;
}

TEST(KvSplits, BitsDoNotDependOnThreadsOrParts) {
    for (fst_type kv : {FST_TYPE_F16, FST_TYPE_Q8_0, FST_TYPE_Q4_0}) {
        SCOPED_TRACE(fst_type_name(kv));
        const Problem P(long_decode(kv), 11);
        const std::vector<unsigned char> one = run(P, 1);
        for (int32_t threads : {2, 3, 0}) EXPECT_EQ(run(P, threads), one) << "n_threads " << threads;
        for (int parts : {1, 2, 3}) EXPECT_EQ(run(P, 1, parts), one) << "nth " << parts;
    }
}

// The segments [cuts[i], cuts[i + 1]) of P's cache: one fst_attn_with_state call each (sinks with the last) against
// one fst_attn_segments call, at several thread counts; bit for bit.
void expect_multi_segment_equals_sequence(const Problem &P, const std::vector<int64_t> &cuts) {
    const size_t n = cuts.size() - 1;
    std::vector<fst_test::Segment> segs;
    for (size_t i = 0; i < n; ++i) segs.push_back(P.segment(cuts[i], cuts[i + 1] - cuts[i]));
    const fst_tensor q = P.q();

    Buffer s1 = P.make_state(), o1 = P.make_out();
    ASSERT_EQ(fst_state_init(&s1.t, &o1.t), FST_OK);
    for (size_t i = 0; i < n; ++i) {
        fst_attn_params p = segs[i].params();
        p.n_threads = 2;
        ASSERT_EQ(fst_attn_with_state(&p, &q, &segs[i].k, &segs[i].v, segs[i].mask_ptr(), i + 1 == n ? P.sinks() : nullptr,
                                      &s1.t, &o1.t), FST_OK);
    }
    std::vector<fst_segment> list;
    for (auto &g : segs) list.push_back(fst_segment{&g.k, &g.v, g.mask_ptr(), g.j0 + P.spec.kv_pos0, nullptr});
    for (int32_t threads : {1, 2, 3, 0}) {
        Buffer s2 = P.make_state(), o2 = P.make_out();
        ASSERT_EQ(fst_state_init(&s2.t, &o2.t), FST_OK);
        fst_attn_params p = P.params();
        p.n_threads = threads;
        ASSERT_EQ(fst_attn_segments(&p, &q, list.data(), int64_t(n), P.sinks(), &s2.t, &o2.t), FST_OK) << fst_last_error();
        EXPECT_EQ(o2.storage, o1.storage) << "n_threads " << threads;
        EXPECT_EQ(s2.storage, s1.storage) << "n_threads " << threads;
    }
    for (int nth : {2, 3}) { // parts on the caller's threads, in any order
        Buffer s2 = P.make_state(), o2 = P.make_out();
        ASSERT_EQ(fst_state_init(&s2.t, &o2.t), FST_OK);
        const fst_attn_params p = P.params();
        for (int ith = nth - 1; ith >= 0; --ith)
            ASSERT_EQ(fst_attn_segments_part(&p, &q, list.data(), int64_t(n), P.sinks(), &s2.t, &o2.t, ith, nth), FST_OK);
        EXPECT_EQ(o2.storage, o1.storage) << "nth " << nth;
        EXPECT_EQ(s2.storage, s1.storage) << "nth " << nth;
    }
    EXPECT_LE(ref::rel_error(P.reference(), o1.t), 1e-5);
}

TEST(KvSplits, MultiSegmentCallEqualsCallsInSequence) {
    expect_multi_segment_equals_sequence(Problem(long_decode(FST_TYPE_F16), 12), {0, 1000, 1001, 5000, 9000});
}

// Many segments shorter than a piece (a paged cache): the call groups consecutive ones into work items for the
// threads, and a long segment among them is cut into pieces as usual; the bits stay those of calls in sequence.
TEST(KvSplits, ManyShortSegmentsEqualCallsInSequence) {
    for (fst_type kv : {FST_TYPE_F16, FST_TYPE_Q8_0}) {
        SCOPED_TRACE(fst_type_name(kv));
        std::vector<int64_t> cuts = {0};
        for (int64_t length : {300, 17, 512, 256, 1, 700, 4000, 64, 999, 128, 200}) // 4000: cut into pieces
            for (int repeat = 0; repeat < 2 && cuts.back() + length <= 9000; ++repeat) cuts.push_back(cuts.back() + length);
        if (cuts.back() < 9000) cuts.push_back(9000);
        expect_multi_segment_equals_sequence(Problem(long_decode(kv), 13), cuts);
    }
}

// Short segments of a multi-segment call go through the kernel several at a time (up to 1024 keys), each with its
// own state, mask columns and visible range: the bits stay those of one call per segment, for 1, 2 and 4 rows per
// KV head, with a mask tensor and a sliding window that hides whole segments.
TEST(KvSplits, ShortSegmentsSharingKernelPassesEqualCallsInSequence) {
    for (fst_type kv : {FST_TYPE_F16, FST_TYPE_Q8_0, FST_TYPE_Q4_0})
        for (int64_t heads_per_kv : {1, 2, 4}) {
            SCOPED_TRACE(fst_type_name(kv));
            SCOPED_TRACE(heads_per_kv);
            Spec s = long_decode(kv);
            s.n_kv = 3000;
            s.n_head_kv = 4;
            s.n_head = 4 * heads_per_kv;
            s.has_mask = true;
            s.mask_type = FST_TYPE_F16;
            s.mask_inf_fraction = 0.2;
            s.window = 2500; // the first 500 keys are outside every row's window
            s.q_pos0 = s.n_kv - 1;
            std::vector<int64_t> cuts = {0};
            for (int i = 0; cuts.back() < s.n_kv; ++i)
                cuts.push_back(std::min<int64_t>(s.n_kv, cuts.back() + std::vector<int64_t>{5, 64, 130, 1, 33, 250, 17}[i % 7]));
            expect_multi_segment_equals_sequence(Problem(s, 14), cuts);
        }
}

} // namespace
