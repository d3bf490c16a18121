// A call in steady state allocates nothing (issue: "no heap allocation per call"): after a warm-up call of the same
// shape, every entry point runs without reaching operator new, on one thread or on the pool.
#include "support/buffer.h"
#include "support/count_allocations.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

namespace {

using fst_test::g_allocations;

using fst_test::Buffer;

struct Case {
    const char *name;
    int64_t D, n_q, n_kv, n_head, n_head_kv;
    fst_type kv_type;
    bool causal, mask, sinks;
    int segments;
};

// Runs the call three times; the third must not allocate.
template <class Call> long allocations_in_steady_state(Call &&call) {
    call();
    call();
    const long before = g_allocations.load();
    call();
    return g_allocations.load() - before;
}

TEST(Allocations, AttentionCallsInSteadyStateAllocateNothing) {
    const Case cases[] = {
        {"decode f16", 128, 1, 3000, 8, 2, FST_TYPE_F16, false, false, false, 1},
        {"decode q8_0, long (KV pieces)", 64, 1, 20000, 4, 1, FST_TYPE_Q8_0, false, false, true, 1},
        {"prefill causal, mask", 64, 40, 600, 4, 2, FST_TYPE_F16, true, true, false, 1},
        {"four segments q4_0", 64, 2, 900, 4, 4, FST_TYPE_Q4_0, true, false, true, 4},
    };
    std::mt19937 rng(7);
    for (const Case &c : cases) {
        for (int threads : {1, 2}) {
            SCOPED_TRACE(std::string(c.name) + ", n_threads " + std::to_string(threads));
            Buffer q(FST_TYPE_F32, {c.D, c.n_q, c.n_head, 1}), k(c.kv_type, {c.D, c.n_kv, c.n_head_kv, 1}),
                v(c.kv_type, {c.D, c.n_kv, c.n_head_kv, 1}), mask(FST_TYPE_F16, {c.n_kv, c.n_q, 1, 1}),
                sinks(FST_TYPE_F32, {c.n_head, 1, 1, 1}), state(FST_TYPE_F32, {2, c.n_head, c.n_q, 1}),
                out(FST_TYPE_F32, {c.D, c.n_head, c.n_q, 1});
            q.fill_normal(rng);
            k.fill_normal(rng);
            v.fill_normal(rng);
            sinks.fill_normal(rng);
            fst_attn_params p = fst_attn_default_params();
            p.scale = 0.125f;
            p.n_threads = threads;
            if (c.causal) {
                p.virtual_mask = FST_MASK_CAUSAL;
                p.q_pos0 = c.n_kv - c.n_q;
            }
            std::vector<fst_tensor> ks, vs, ms; // built before counting
            std::vector<fst_segment> segs;
            const int64_t per = c.n_kv / c.segments;
            for (int s = 0; s < c.segments; ++s) {
                const int64_t j0 = s * per, n = s + 1 == c.segments ? c.n_kv - j0 : per;
                ks.push_back(fst_test::slice(k.t, 1, j0, n));
                vs.push_back(fst_test::slice(v.t, 1, j0, n));
                ms.push_back(fst_test::slice(mask.t, 0, j0, n));
            }
            // The same keys as a paged cache of 16-key pages in reverse order.
            const int64_t n_pages = (c.n_kv + 15) / 16;
            Buffer kp(c.kv_type, {c.D, 16, c.n_head_kv, n_pages}), vp(c.kv_type, {c.D, 16, c.n_head_kv, n_pages}),
                table(FST_TYPE_I32, {n_pages, 1, 1, 1});
            kp.fill_normal(rng);
            vp.fill_normal(rng);
            for (int64_t i = 0; i < n_pages; ++i) *reinterpret_cast<int32_t *>(table.storage.data() + 4 * i) = int32_t(n_pages - 1 - i);
            const fst_paged_kv paged{&kp.t, &vp.t, &table.t, c.n_kv};
            for (int s = 0; s < c.segments; ++s)
                segs.push_back(fst_segment{&ks[size_t(s)], &vs[size_t(s)], c.mask ? &ms[size_t(s)] : nullptr,
                                           s * per, nullptr});
            const long n = allocations_in_steady_state([&] {
                ASSERT_EQ(fst_state_init(&state.t, &out.t), FST_OK);
                if (c.segments == 1)
                    ASSERT_EQ(fst_attn_with_state(&p, &q.t, &k.t, &v.t, c.mask ? &mask.t : nullptr,
                                                  c.sinks ? &sinks.t : nullptr, &state.t, &out.t), FST_OK)
                        << fst_last_error();
                else
                    ASSERT_EQ(fst_attn_segments(&p, &q.t, segs.data(), c.segments, c.sinks ? &sinks.t : nullptr,
                                                &state.t, &out.t), FST_OK)
                        << fst_last_error();
                ASSERT_EQ(fst_attn_with_state_part(&p, &q.t, &k.t, &v.t, nullptr, nullptr, &state.t, &out.t, 0, 2),
                          FST_OK);
                ASSERT_EQ(fst_attn_paged(&p, &q.t, &paged, c.mask ? &mask.t : nullptr, nullptr, &state.t, &out.t), FST_OK)
                    << fst_last_error();
            });
            EXPECT_EQ(n, 0);
        }
    }
}

TEST(Allocations, StateFunctionsAllocateNothing) {
    const int64_t DV = 64, H = 4, NQ = 3;
    Buffer a(FST_TYPE_F32, {2, H, NQ, 1}), ao(FST_TYPE_F32, {DV, H, NQ, 1}), b(FST_TYPE_F32, {2, H, NQ, 1}),
        bo(FST_TYPE_F32, {DV, H, NQ, 1}), sinks(FST_TYPE_F32, {H, 1, 1, 1}), lse(FST_TYPE_F32, {H, NQ, 1, 1});
    const long n = allocations_in_steady_state([&] {
        ASSERT_EQ(fst_state_init(&a.t, &ao.t), FST_OK);
        ASSERT_EQ(fst_state_init(&b.t, &bo.t), FST_OK);
        ASSERT_EQ(fst_state_add_sinks(&sinks.t, &b.t, &bo.t), FST_OK);
        ASSERT_EQ(fst_state_merge(&a.t, &ao.t, &b.t, &bo.t), FST_OK);
        ASSERT_EQ(fst_state_export_lse(&a.t, 2.0f, &lse.t), FST_OK);
        ASSERT_EQ(fst_state_import_lse(&lse.t, 2.0f, &b.t, &bo.t), FST_OK);
    });
    EXPECT_EQ(n, 0);
}

} // namespace
