// The cache in steady state allocates nothing: fst_cache_attn reuses a per-thread segment array, and appends to a
// cache whose tiers are all rings (max_tokens) only move bytes. (A growing unbounded tier allocates one extent of
// 256, 512, 1024, ... tokens when it fills: a logarithmic number of times.)
#include "support/cache_support.h"
#include "support/count_allocations.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

namespace {

using fst_test::g_allocations;

using namespace cache_test;

TEST(CacheAllocations, AttnAndAppendInSteadyStateAllocateNothing) {
    fst_cache_config c = fst_cache_default_config();
    c.n_head_kv = 2;
    c.head_dim_k = c.head_dim_v = 64;
    c.n_tiers = 3;
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 32, nullptr};
    c.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 64, nullptr};
    c.tiers[2] = fst_cache_tier{FST_TYPE_Q4_0, 0, nullptr};
    c.n_keep = 4;
    c.max_tokens = 500;
    c.migrate_chunk = 8;
    fst_cache *cache = nullptr;
    ASSERT_EQ(fst_cache_create(&c, &cache), FST_OK) << fst_last_error();
    std::mt19937 rng(8);
    Rows rows(64, 64, 600, 2, rng), one(64, 64, 1, 2, rng);
    ASSERT_EQ(fst_cache_append(cache, 0, &rows.k.t, &rows.v.t), FST_OK) << fst_last_error();
    Buffer q(FST_TYPE_F32, {64, 1, 8, 1});
    q.fill_normal(rng);
    Result r(64, 8, 1);
    fst_attn_params p = fst_attn_default_params();
    for (int threads : {1, 2}) {
        p.n_threads = threads;
        const auto step = [&] {
            ASSERT_EQ(fst_cache_append(cache, 0, &one.k.t, &one.v.t), FST_OK) << fst_last_error();
            ASSERT_EQ(fst_cache_attn(cache, &p, 0, &q.t, nullptr, &r.state.t, &r.out.t), FST_OK) << fst_last_error();
        };
        step();
        step();
        const long before = g_allocations.load();
        for (int i = 0; i < 100; ++i) step(); // crosses chunk migrations, ring wrap-arounds and evictions
        EXPECT_EQ(g_allocations.load() - before, 0) << "n_threads " << threads;
    }
    fst_cache_free(cache);
}

} // namespace
