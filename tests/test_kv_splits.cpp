// Decode with few tiles: the KV range is cut into pieces that run on different threads and are merged with ⊕
// (flash-decoding). The cuts are fixed by the problem, so the bits must not depend on n_threads, on ith/nth, or
// on whether the segments come one call each or in one multi-segment call; and the result must match the double
// reference as any other call does.
#include "reference/reference.h"
#include "support/buffer.h"
#include "support/cases.h"

#include <flashstate/flashstate.h>

#include <gtest/gtest.h>

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
    s.n_kv = 9000; // 36 chunks of 256 keys in one tile: several pieces
    s.n_head = 4;
    s.n_head_kv = 1;
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

TEST(KvSplits, MultiSegmentCallEqualsCallsInSequence) {
    const Problem P(long_decode(FST_TYPE_F16), 12);
    const int64_t cuts[] = {0, 1000, 1001, 5000, 9000};
    std::vector<fst_test::Segment> segs;
    for (int i = 0; i < 4; ++i) segs.push_back(P.segment(cuts[i], cuts[i + 1] - cuts[i]));
    const fst_tensor q = P.q();

    Buffer s1 = P.make_state(), o1 = P.make_out();
    ASSERT_EQ(fst_state_init(&s1.t, &o1.t), FST_OK);
    for (int i = 0; i < 4; ++i) {
        fst_attn_params p = segs[size_t(i)].params();
        p.n_threads = 2;
        ASSERT_EQ(fst_attn_with_state(&p, &q, &segs[size_t(i)].k, &segs[size_t(i)].v, segs[size_t(i)].mask_ptr(),
                                      i == 3 ? P.sinks() : nullptr, &s1.t, &o1.t), FST_OK);
    }
    std::vector<fst_segment> list;
    for (auto &g : segs) list.push_back(fst_segment{&g.k, &g.v, g.mask_ptr(), g.j0 + P.spec.kv_pos0, nullptr});
    for (int32_t threads : {1, 2}) {
        Buffer s2 = P.make_state(), o2 = P.make_out();
        ASSERT_EQ(fst_state_init(&s2.t, &o2.t), FST_OK);
        fst_attn_params p = P.params();
        p.n_threads = threads;
        ASSERT_EQ(fst_attn_segments(&p, &q, list.data(), 4, P.sinks(), &s2.t, &o2.t), FST_OK) << fst_last_error();
        EXPECT_EQ(o2.storage, o1.storage) << "n_threads " << threads;
        EXPECT_EQ(s2.storage, s1.storage) << "n_threads " << threads;
    }
    EXPECT_LE(ref::rel_error(P.reference(), o1.t), 1e-5);
}

} // namespace
