// The concurrency contract (docs/cache.md): one appender per layer and any number of readers at once. While
// threads append to two layers, readers attend over layer 0 (and read its size and stats, and save the cache);
// every result must be, bit for bit, the result over some prefix of the appends that a serial replica produced
// (checked against the double reference), and the prefixes a reader sees never go backwards: no torn reads.
// Runs under ThreadSanitizer (scripts/sanitize.sh).
#include "support/cache_support.h"

#include <flashstate/flashstate.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace cache_test;

namespace {

constexpr int64_t D = 64, DV = 32, H = 2, n_head = 4;

fst_cache_config config() {
    fst_cache_config c = fst_cache_default_config();
    c.n_layer = 2;
    c.n_head_kv = int32_t(H);
    c.head_dim_k = D;
    c.head_dim_v = DV;
    c.n_tiers = 3;
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 8, nullptr};
    c.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 8, nullptr};
    c.tiers[2] = fst_cache_tier{FST_TYPE_Q4_0, 0, nullptr};
    c.n_keep = 2;
    c.max_tokens = 30;
    c.migrate_chunk = 4;
    return c;
}

// Out and state bytes of one attention call over layer 0 (one thread: bits depend only on the cache's contents).
std::vector<unsigned char> attend(fst_cache *cache, const Buffer &q, int32_t layer) {
    Result r(DV, n_head, 1);
    fst_attn_params p = fst_attn_default_params();
    p.scale = 0.25f;
    p.n_threads = 1;
    EXPECT_EQ(fst_cache_attn(cache, &p, layer, &q.t, nullptr, &r.state.t, &r.out.t), FST_OK) << fst_last_error();
    std::vector<unsigned char> bytes(r.state.storage);
    bytes.insert(bytes.end(), r.out.storage.begin(), r.out.storage.end());
    return bytes;
}

TEST(CacheThreads, ReadersSeeWholeAppendsOnly) {
    std::mt19937 rng(21);
    const std::vector<int64_t> batches = {1, 3, 1, 2, 5, 1, 1, 4, 2, 1, 7, 1, 3, 1, 1, 2, 6, 1, 2, 1,
                                          1, 3, 1, 2, 5, 1, 1, 4, 2, 1, 1, 1, 2, 3, 1, 1, 2, 1, 1, 1};
    int64_t total = 0;
    for (int64_t b : batches) total += b;
    Rows rows(D, DV, total, H, rng);
    Buffer q(FST_TYPE_F32, {D, 1, n_head, 1});
    q.fill_normal(rng);

    // The serial replica: the expected result after each prefix of appends, checked against the reference.
    std::vector<std::vector<unsigned char>> after; // after[i]: the result bytes after i appends
    const auto prefix_of = [&](const std::vector<unsigned char> &bytes) -> int64_t {
        for (size_t i = 0; i < after.size(); ++i)
            if (after[i] == bytes) return int64_t(i);
        return -1;
    };
    {
        flashstate::Cache replica(config());
        int64_t done = 0;
        for (size_t i = 0; i <= batches.size(); ++i) {
            const std::vector<unsigned char> bytes = attend(replica.handle(), q, 0);
            after.push_back(bytes);
            const Stored s = read_stored(replica.handle(), 0, D, DV, H);
            fst_attn_params p = fst_attn_default_params();
            p.scale = 0.25f;
            p.kv_pos = &s.pos.t;
            Result r(DV, n_head, 1);
            std::memcpy(r.state.storage.data(), bytes.data(), r.state.storage.size());
            std::memcpy(r.out.storage.data(), bytes.data() + r.state.storage.size(), r.out.storage.size());
            if (s.n > 0) EXPECT_LE(ref::rel_error(ref::attention(p, q.t, s.k.t, s.v.t, nullptr, nullptr), r.out.t), 1e-5);
            if (i == batches.size()) break;
            replica.append(0, token_slice(rows.k.t, done, batches[i]), token_slice(rows.v.t, done, batches[i]));
            done += batches[i];
        }
    }

    std::vector<int64_t> appended{0}; // appended[i]: tokens after i appends
    for (int64_t b : batches) appended.push_back(appended.back() + b);

    flashstate::Cache cache(config());
    std::atomic<bool> done{false};
    std::atomic<int> bad{0};
    const std::string saved = (std::filesystem::temp_directory_path() /
                               ("fst_cache_threads_" + std::to_string(::getpid()) + ".fst")).string();

    std::thread appender([&] {
        int64_t at = 0;
        for (int64_t b : batches) {
            if (cache.try_append(0, token_slice(rows.k.t, at, b), token_slice(rows.v.t, at, b)).code() != FST_OK) ++bad;
            at += b;
            std::this_thread::yield(); // let the readers in between appends
        }
        done = true;
    });
    std::thread other_layer([&] { // a second writer, on its own layer
        int64_t at = 0;
        for (int64_t b : batches) {
            if (cache.try_append(1, token_slice(rows.k.t, at, b), token_slice(rows.v.t, at, b)).code() != FST_OK) ++bad;
            at += b;
        }
    });
    std::vector<std::thread> readers;
    std::vector<int64_t> reads(3, 0);
    for (int t = 0; t < 3; ++t)
        readers.emplace_back([&, t] {
            int64_t last = 0;
            do {
                const int64_t prefix = prefix_of(attend(cache.handle(), q, 0));
                if (prefix < last) { // -1: no prefix gives these bits
                    ++bad;
                    return;
                }
                last = prefix;
                // Counts read after that result can only be as large or larger (appends only add; eviction keeps
                // max_tokens).
                const int64_t at_least = std::min<int64_t>(appended[size_t(last)], config().max_tokens);
                int64_t n_tokens = 0;
                fst_cache_tier_stats stats[4];
                if (fst_cache_n_tokens(cache.handle(), 0, &n_tokens, nullptr) != FST_OK ||
                    fst_cache_stats(cache.handle(), 0, stats, 4) != FST_OK || n_tokens < at_least ||
                    stats[0].n_tokens + stats[1].n_tokens + stats[2].n_tokens + stats[3].n_tokens < at_least)
                    ++bad;
                ++reads[size_t(t)];
            } while (!done.load());
        });
    std::thread saver([&] {
        if (cache.try_save(saved.c_str()).code() != FST_OK) ++bad;
    });
    appender.join();
    other_layer.join();
    for (auto &r : readers) r.join();
    saver.join();
    EXPECT_EQ(bad.load(), 0);
    for (int64_t n : reads) EXPECT_GE(n, 1);
    // The end state, and a snapshot saved mid-way, are whole prefixes too.
    EXPECT_EQ(prefix_of(attend(cache.handle(), q, 0)), int64_t(batches.size()));
    EXPECT_EQ(prefix_of(attend(cache.handle(), q, 1)), int64_t(batches.size()));
    flashstate::Cache loaded = flashstate::Cache::load(saved.c_str());
    EXPECT_GE(prefix_of(attend(loaded.handle(), q, 0)), 0);
    std::filesystem::remove(saved);
}

} // namespace
