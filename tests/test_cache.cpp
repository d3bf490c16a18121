// The mixed-precision FIFO cache (docs/cache.md), checked from outside:
//   - after every append, the layer holds exactly the expected positions (n_keep, max_tokens eviction), and every
//     stored row is bit for bit the chain of conversions the tiers it went through imply (fst_quantize_row of what
//     the previous tier stored), so nothing is requantized twice and FIFO order holds;
//   - fst_cache_attn equals one fst_attn_with_state call over the stored contents dequantized and concatenated with
//     an explicit kv_pos tensor (<= 4e-6), and the double reference on the same contents (<= 1e-5), with GQA,
//     ALiBi, softcap, sinks, causal with an offset and sliding windows;
//   - Q8_0 / Q4_0 bytes written by migration are ggml's reference quantizer's (shared/golden/quant);
//   - fst_cache_stats reports tokens, capacity and bytes per tier.
#include "support/cache_support.h"

#include "support/npy.h"

#include <flashstate/flashstate.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

using namespace cache_test;

namespace {

struct Case {
    const char *name;
    fst_type hot;
    int64_t W;
    std::vector<fst_cache_tier> cold; // tiers after the hot one; a non-NULL path marks the file-backed last tier
    int64_t n_keep = 0, max_tokens = 0, chunk = 4;
    int64_t D = 64, DV = 64, H = 1, n_head = 1, n_layer = 1;
    std::vector<int64_t> batches = {1}; // append sizes, cycled
    int64_t N = 100;                    // tokens appended per layer
    float max_bias = 0, softcap = 0;
    bool sinks = false;
    fst_virtual_mask mask = FST_MASK_NONE;
    int64_t window = 0, n_q = 1;
    bool f16_input = false;
};

std::string temp_path(const std::string &name) {
    return (std::filesystem::temp_directory_path() / ("fst_cache_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
}

fst_cache_config config_of(const Case &c, const std::string &file_path) {
    fst_cache_config cfg = fst_cache_default_config();
    cfg.n_layer = int32_t(c.n_layer);
    cfg.n_head_kv = int32_t(c.H);
    cfg.head_dim_k = c.D;
    cfg.head_dim_v = c.DV;
    cfg.n_tiers = int32_t(1 + c.cold.size());
    cfg.tiers[0] = fst_cache_tier{c.hot, c.W, nullptr};
    for (size_t i = 0; i < c.cold.size(); ++i) {
        cfg.tiers[i + 1] = c.cold[i];
        if (c.cold[i].path) cfg.tiers[i + 1].path = file_path.c_str();
    }
    cfg.n_keep = c.n_keep;
    cfg.max_tokens = c.max_tokens;
    cfg.migrate_chunk = c.chunk;
    return cfg;
}

// The bytes a row must have in tier `tier` of `cfg` (tier -1: the n_keep region): the hot tier's conversion of
// the input, then each following tier's conversion of what the previous one stored.
// Without a hot window (tiers[0].capacity 0 before cold tiers) tokens enter tiers[1] straight from the input.
std::vector<unsigned char> expected_row(const fst_cache_config &cfg, int tier, const float *input, int64_t n) {
    const int entry = tier > 0 && cfg.n_tiers > 1 && cfg.tiers[0].capacity == 0 ? 1 : 0;
    std::vector<unsigned char> bytes(row_bytes(cfg.tiers[entry].type, n));
    EXPECT_EQ(fst_quantize_row(cfg.tiers[entry].type, input, bytes.data(), n), FST_OK);
    std::vector<float> f(static_cast<size_t>(n));
    for (int i = entry + 1; i <= tier; ++i) {
        EXPECT_EQ(fst_dequantize_row(cfg.tiers[i - 1].type, bytes.data(), f.data(), n), FST_OK);
        bytes.assign(row_bytes(cfg.tiers[i].type, n), 0);
        EXPECT_EQ(fst_quantize_row(cfg.tiers[i].type, f.data(), bytes.data(), n), FST_OK);
    }
    return bytes;
}

// Checks one layer after `appended` tokens: positions, stored bytes, stats and attention.
void check_layer(const Case &c, const fst_cache_config &cfg, fst_cache *cache, int32_t layer, const Rows &input,
                 int64_t appended, std::mt19937 &rng) {
    SCOPED_TRACE("layer " + std::to_string(layer) + " after " + std::to_string(appended) + " tokens");
    Stored s = read_stored(cache, layer, c.D, c.DV, c.H);
    const std::vector<int64_t> pos = positions(s);
    ASSERT_EQ(pos, expected_positions(appended, c.n_keep, c.max_tokens));
    int64_t n_tokens = -1, next_pos = -1;
    ASSERT_EQ(fst_cache_n_tokens(cache, layer, &n_tokens, &next_pos), FST_OK);
    EXPECT_EQ(n_tokens, s.n);
    EXPECT_EQ(next_pos, appended);

    // Which tier each stored token is in, from the stats: n_keep region, then the last tier ... the hot tier.
    std::vector<fst_cache_tier_stats> stats(size_t(cfg.n_tiers) + 1);
    ASSERT_EQ(fst_cache_stats(cache, layer, stats.data(), cfg.n_tiers + 1), FST_OK) << fst_last_error();
    std::vector<int> tier_of;
    tier_of.insert(tier_of.end(), size_t(stats[size_t(cfg.n_tiers)].n_tokens), 0);
    for (int i = cfg.n_tiers - 1; i >= 0; --i) {
        const fst_cache_tier_stats &t = stats[size_t(i)];
        EXPECT_EQ(t.type, cfg.tiers[i].type);
        if (t.capacity > 0) EXPECT_LE(t.n_tokens, t.capacity) << "tier " << i;
        const int64_t H = c.H;
        const size_t row = row_bytes(t.type, c.D) + row_bytes(t.type, c.DV);
        if (t.capacity > 0) EXPECT_GE(t.bytes, size_t(t.capacity) * size_t(H) * row) << "tier " << i;
        EXPECT_GE(t.bytes, size_t(t.n_tokens) * size_t(H) * row) << "tier " << i;
        tier_of.insert(tier_of.end(), size_t(t.n_tokens), i);
    }
    ASSERT_EQ(int64_t(tier_of.size()), s.n);
    for (int64_t j = 0; j < s.n; ++j)
        for (int64_t h = 0; h < c.H; ++h) {
            const float *k_in = const_cast<Buffer &>(input.k).f32(0, pos[size_t(j)], h);
            const float *v_in = const_cast<Buffer &>(input.v).f32(0, pos[size_t(j)], h);
            ASSERT_EQ(s.k_bytes[size_t(j * c.H + h)], expected_row(cfg, tier_of[size_t(j)], k_in, c.D))
                << "K of position " << pos[size_t(j)] << " head " << h << " in tier " << tier_of[size_t(j)];
            ASSERT_EQ(s.v_bytes[size_t(j * c.H + h)], expected_row(cfg, tier_of[size_t(j)], v_in, c.DV))
                << "V of position " << pos[size_t(j)] << " head " << h;
        }

    // Attention: queries at the newest positions (an offset into the cache), or before them for causal masks.
    Buffer q(FST_TYPE_F32, {c.D, c.n_q, c.n_head, 1});
    q.fill_normal(rng);
    Buffer sinks(FST_TYPE_F32, {c.n_head, 1, 1, 1});
    for (int64_t h = 0; h < c.n_head; ++h) *sinks.f32(h) = float(h) * 0.5f - 1.0f;
    fst_attn_params p = fst_attn_default_params();
    p.scale = 1.0f / std::sqrt(float(c.D)) * 2.0f;
    p.max_bias = c.max_bias;
    p.softcap = c.softcap;
    p.virtual_mask = c.mask;
    p.window = c.window;
    p.q_pos0 = appended - c.n_q - 1; // the last query sees every key, earlier ones fewer
    p.n_threads = int32_t(1 + layer % 2);
    const fst_tensor *sinks_ptr = c.sinks ? &sinks.t : nullptr;

    Result got(c.DV, c.n_head, c.n_q);
    ASSERT_EQ(fst_cache_attn(cache, &p, layer, &q.t, sinks_ptr, &got.state.t, &got.out.t), FST_OK) << fst_last_error();

    fst_attn_params flat = p;
    flat.kv_pos = &s.pos.t;
    Result one_call(c.DV, c.n_head, c.n_q);
    ASSERT_EQ(fst_attn_with_state(&flat, &q.t, &s.k.t, &s.v.t, nullptr, sinks_ptr, &one_call.state.t, &one_call.out.t),
              FST_OK)
        << fst_last_error();
    EXPECT_LE(fst_test::rel_diff(got.out.t, one_call.out.t), 4e-6);
    const fst_test::StateError se = fst_test::state_diff(got.state.t, one_call.state.t);
    EXPECT_LE(se.m, 4e-6);
    EXPECT_LE(se.s, 4e-6);

    const ref::Result expected = ref::attention(flat, q.t, s.k.t, s.v.t, nullptr, sinks_ptr);
    EXPECT_LE(ref::rel_error(expected, got.out.t), 1e-5);
    const fst_test::StateError re = fst_test::state_error(got.state.t, expected);
    EXPECT_LE(re.m, 1e-5);
    EXPECT_LE(re.s, 1e-5);
}

void run_case(const Case &c) {
    SCOPED_TRACE(c.name);
    const std::string file_path = temp_path(std::string(c.name) + ".tier");
    const fst_cache_config cfg = config_of(c, file_path);
    fst_cache *cache = nullptr;
    ASSERT_EQ(fst_cache_create(&cfg, &cache), FST_OK) << fst_last_error();
    if (cfg.tiers[cfg.n_tiers - 1].path) EXPECT_TRUE(std::filesystem::exists(file_path));

    std::mt19937 rng(1234);
    std::vector<Rows> input;
    std::vector<Buffer> input_f16;
    for (int64_t l = 0; l < c.n_layer; ++l) {
        input.emplace_back(c.D, c.DV, c.N, c.H, rng);
        if (c.f16_input) { // the cache receives F16; the expected rows start from those values
            Buffer kh(FST_TYPE_F16, {c.D, c.N, c.H, 1}, {0, 6, 0, 0}), vh(FST_TYPE_F16, {c.DV, c.N, c.H, 1});
            for (int64_t h = 0; h < c.H; ++h)
                for (int64_t j = 0; j < c.N; ++j) {
                    kh.set_row(input.back().k.f32(0, j, h), j, h);
                    vh.set_row(input.back().v.f32(0, j, h), j, h);
                    fst_dequantize_row(FST_TYPE_F16, kh.row(j, h), input.back().k.f32(0, j, h), c.D);
                    fst_dequantize_row(FST_TYPE_F16, vh.row(j, h), input.back().v.f32(0, j, h), c.DV);
                }
            input_f16.push_back(kh);
            input_f16.push_back(vh);
        }
    }

    int64_t appended = 0;
    for (size_t b = 0; appended < c.N; ++b) {
        const int64_t n = std::min(c.batches[b % c.batches.size()], c.N - appended);
        for (int32_t l = 0; l < int32_t(c.n_layer); ++l) {
            const fst_tensor &k_all = c.f16_input ? input_f16[size_t(2 * l)].t : input[size_t(l)].k.t;
            const fst_tensor &v_all = c.f16_input ? input_f16[size_t(2 * l + 1)].t : input[size_t(l)].v.t;
            const fst_tensor k = token_slice(k_all, appended, n), v = token_slice(v_all, appended, n);
            ASSERT_EQ(fst_cache_append(cache, l, &k, &v), FST_OK) << fst_last_error();
        }
        appended += n;
        for (int32_t l = 0; l < int32_t(c.n_layer); ++l) {
            check_layer(c, cfg, cache, l, input[size_t(l)], appended, rng);
            if (::testing::Test::HasFatalFailure()) break;
        }
        if (::testing::Test::HasFatalFailure()) break;
    }
    fst_cache_free(cache);
    EXPECT_FALSE(std::filesystem::exists(file_path)) << "the file-backed tier is scratch: deleted on free";
}

const fst_cache_tier kQ8{FST_TYPE_Q8_0, 0, nullptr};
const fst_cache_tier kQ4{FST_TYPE_Q4_0, 0, nullptr};
fst_cache_tier bounded(fst_type t, int64_t capacity) { return fst_cache_tier{t, capacity, nullptr}; }
fst_cache_tier file_tier(fst_type t, int64_t capacity = 0) { return fst_cache_tier{t, capacity, "file"}; }

TEST(Cache, HotOnlyOneTokenAtATime) {
    Case c{"hot_only", FST_TYPE_F16, 0, {}};
    c.N = 40;
    run_case(c);
}

TEST(Cache, HotF16ColdQ8OneTokenAtATime) {
    Case c{"f16_q8", FST_TYPE_F16, 8, {kQ8}};
    c.N = 70;
    run_case(c);
}

TEST(Cache, NoHotWindowQuantizesOnAppend) {
    Case c{"no_hot_window", FST_TYPE_F16, 0, {bounded(FST_TYPE_Q8_0, 16), kQ4}};
    c.batches = {1, 5, 2};
    c.N = 60;
    c.n_keep = 3;
    c.max_tokens = 50;
    c.mask = FST_MASK_CAUSAL;
    run_case(c);
}

TEST(Cache, HotF32ColdQ8ThenQ4Batches) {
    Case c{"f32_q8_q4", FST_TYPE_F32, 16, {bounded(FST_TYPE_Q8_0, 24), kQ4}};
    c.batches = {3, 7, 1, 20, 2};
    c.N = 200;
    c.chunk = 8;
    run_case(c);
}

TEST(Cache, BatchesLargerThanEveryTierGqaLayers) {
    Case c{"big_batches", FST_TYPE_F16, 8, {bounded(FST_TYPE_Q8_0, 12), bounded(FST_TYPE_Q4_0, 8), kQ8}};
    c.batches = {50, 1, 33};
    c.N = 250;
    c.chunk = 4;
    c.H = 2;
    c.n_head = 6;
    c.n_layer = 3;
    c.n_q = 3;
    run_case(c);
}

TEST(Cache, FileBackedLastTierEveryType) {
    for (fst_type t : {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0}) {
        Case c{"file", FST_TYPE_F16, 8, {bounded(FST_TYPE_Q8_0, 8), file_tier(t)}};
        c.batches = {5, 1, 9};
        c.N = 120;
        c.n_layer = 2;
        c.DV = 32;
        run_case(c);
        // The log tier grows in extents of 256, 512, ... tokens: cross the first boundary once.
        Case big{"file_big", FST_TYPE_F32, 4, {file_tier(t)}};
        big.batches = {100, 3};
        big.N = 400;
        big.D = 32;
        big.DV = 32;
        run_case(big);
    }
}

TEST(Cache, NKeepAndMaxTokensEvictExactly) {
    Case c{"streaming", FST_TYPE_F16, 8, {bounded(FST_TYPE_Q8_0, 8), kQ4}};
    c.n_keep = 4;
    c.max_tokens = 30;
    c.batches = {1, 2, 5, 13, 1};
    c.N = 150;
    c.chunk = 4;
    c.mask = FST_MASK_CAUSAL;
    c.n_q = 2;
    run_case(c);
}

TEST(Cache, MaxTokensWithABoundedFileTierAndNoKeep) {
    Case c{"streaming_file", FST_TYPE_F32, 6, {file_tier(FST_TYPE_Q8_0, 30)}};
    c.max_tokens = 26;
    c.batches = {4, 1, 30};
    c.N = 130;
    c.chunk = 3;
    c.n_layer = 2;
    run_case(c);
}

TEST(Cache, MaxTokensSmallerThanTheHotTier) {
    Case c{"evict_from_hot", FST_TYPE_F16, 64, {kQ8}};
    c.n_keep = 2;
    c.max_tokens = 10;
    c.batches = {3, 1, 7};
    c.N = 60;
    run_case(c);
}

// A batch larger than max_tokens - n_keep (found by fuzz_cache: the layer kept the whole batch).
TEST(Cache, OneBatchLargerThanMaxTokens) {
    Case c{"batch_over_max_tokens", FST_TYPE_F16, 64, {kQ8}};
    c.n_keep = 1;
    c.max_tokens = 20;
    c.batches = {33, 2, 45, 1};
    c.N = 120;
    run_case(c);
}

TEST(Cache, NKeepLargerThanOneAppend) {
    Case c{"keep_batches", FST_TYPE_F32, 4, {bounded(FST_TYPE_Q4_0, 4), kQ8}};
    c.n_keep = 7;
    c.batches = {5, 9, 2};
    c.N = 60;
    c.chunk = 2;
    run_case(c);
}

TEST(Cache, AlibiSoftcapSinksCausalOffset) {
    Case c{"alibi_softcap_sinks", FST_TYPE_F16, 8, {kQ8}};
    c.H = 2;
    c.n_head = 12; // the m1 branch of ALiBi for heads 8..11
    c.max_bias = 8.0f;
    c.softcap = 20.0f;
    c.sinks = true;
    c.mask = FST_MASK_CAUSAL;
    c.n_q = 4;
    c.batches = {3, 6};
    c.N = 60;
    run_case(c);
}

TEST(Cache, SlidingWindowAcrossTiersAndEviction) {
    Case c{"window", FST_TYPE_F16, 8, {bounded(FST_TYPE_Q8_0, 8), kQ4}};
    c.mask = FST_MASK_SLIDING_WINDOW;
    c.window = 13;
    c.n_keep = 3;
    c.max_tokens = 40;
    c.n_q = 5;
    c.batches = {2, 7};
    c.N = 90;
    run_case(c);
}

TEST(Cache, F16InputWithPaddedRows) {
    Case c{"f16_input", FST_TYPE_F32, 8, {kQ8}};
    c.f16_input = true;
    c.batches = {4, 11};
    c.N = 60;
    c.D = 96;
    c.DV = 32;
    run_case(c);
}

TEST(Cache, ChunkOfOneAndChunkOfWholeTier) {
    for (int64_t chunk : {1, 8}) {
        Case c{"chunks", FST_TYPE_F16, 8, {bounded(FST_TYPE_Q8_0, 8), kQ4}};
        c.chunk = chunk;
        c.batches = {1, 3};
        c.N = 70;
        run_case(c);
    }
}

// The tiers fill in chunks: with a hot tier of 4 and chunks of 2, one token at a time, the hot tier holds 3 or 4
// tokens once full (a full tier moves its 2 oldest before taking one more), the cold tier the rest.
TEST(Cache, MigrationMovesWholeChunks) {
    fst_cache_config cfg = fst_cache_default_config();
    cfg.head_dim_k = cfg.head_dim_v = 32;
    cfg.tiers[0] = fst_cache_tier{FST_TYPE_F16, 4, nullptr};
    cfg.migrate_chunk = 2;
    fst_cache *cache = nullptr;
    ASSERT_EQ(fst_cache_create(&cfg, &cache), FST_OK) << fst_last_error();
    std::mt19937 rng(5);
    Rows rows(32, 32, 1, 1, rng);
    const int64_t expected_hot[] = {1, 2, 3, 4, 3, 4, 3, 4, 3, 4};
    for (int64_t i = 0; i < 10; ++i) {
        ASSERT_EQ(fst_cache_append(cache, 0, &rows.k.t, &rows.v.t), FST_OK) << fst_last_error();
        fst_cache_tier_stats stats[3];
        ASSERT_EQ(fst_cache_stats(cache, 0, stats, 3), FST_OK) << fst_last_error();
        EXPECT_EQ(stats[0].n_tokens, expected_hot[i]) << "after " << i + 1;
        EXPECT_EQ(stats[1].n_tokens, i + 1 - expected_hot[i]) << "after " << i + 1;
        EXPECT_EQ(stats[2].n_tokens, 0);
    }
    fst_cache_free(cache);
}

// Bytes per tier: what the stats report is what the layout needs (K and V rows of every KV head).
TEST(Cache, StatsReportBytesPerTier) {
    fst_cache_config cfg = fst_cache_default_config();
    cfg.n_layer = 2;
    cfg.n_head_kv = 2;
    cfg.head_dim_k = 128;
    cfg.head_dim_v = 64;
    cfg.n_tiers = 3;
    cfg.tiers[0] = fst_cache_tier{FST_TYPE_F16, 64, nullptr};
    cfg.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 128, nullptr};
    cfg.tiers[2] = fst_cache_tier{FST_TYPE_Q4_0, 0, nullptr};
    cfg.n_keep = 4;
    flashstate::Cache cache(cfg);
    const auto s = cache.stats(1);
    ASSERT_EQ(s.size(), 4u);
    const size_t f16_row = 2 * 128 + 2 * 64, q8_row = 34 * 4 + 34 * 2;
    EXPECT_EQ(s[0].bytes, 64u * 2 * f16_row); // K [128, 64, 2] then V [64, 64, 2]
    EXPECT_EQ(s[1].bytes, 128u * 2 * q8_row);
    EXPECT_EQ(s[2].bytes, 0u) << "an unbounded tier allocates when tokens arrive";
    EXPECT_EQ(s[3].type, FST_TYPE_F16);
    EXPECT_EQ(s[3].capacity, 4);
    EXPECT_EQ(s[3].bytes, 4u * 2 * f16_row);
    EXPECT_EQ(s[2].capacity, 0);

    std::mt19937 rng(3);
    Rows rows(128, 64, 300, 2, rng);
    cache.append(1, rows.k.t, rows.v.t);
    const auto t = cache.stats(1);
    EXPECT_EQ(t[3].n_tokens, 4);
    EXPECT_EQ(t[0].n_tokens + t[1].n_tokens + t[2].n_tokens, 296);
    EXPECT_GT(t[2].bytes, 0u);
    EXPECT_EQ(cache.n_tokens(1), 300);
    EXPECT_EQ(cache.n_tokens(0), 0);
    EXPECT_EQ(cache.bytes(1), t[0].bytes + t[1].bytes + t[2].bytes + t[3].bytes);
}

// Migration writes ggml's reference quantizer's bytes: a row equal to each golden input goes through an F32 hot
// tier into a Q8_0 or Q4_0 tier (RAM or file-backed), and the stored bytes are the golden blocks.
TEST(Cache, MigratedBytesMatchGgmlReferenceQuantizer) {
    const std::string dir = std::string(FLASHSTATE_GOLDEN_DIR) + "/quant";
    ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
    int checked = 0;
    for (const auto &entry : std::filesystem::directory_iterator(dir)) {
        const std::string file = entry.path().filename().string();
        if (file.size() < 8 || file.substr(file.size() - 8) != ".f32.npy") continue;
        const std::string base = file.substr(0, file.size() - 8);
        std::vector<float> row = fst_test::read_npy(entry.path().string()).as_f32();
        const int64_t n = int64_t(row.size());
        for (fst_type type : {FST_TYPE_Q8_0, FST_TYPE_Q4_0})
            for (bool in_file : {false, true}) {
                SCOPED_TRACE(base + " " + fst_type_name(type) + (in_file ? " file" : " ram"));
                const std::string golden = dir + "/" + base + "." + fst_type_name(type) + ".ref.npy";
                const std::vector<unsigned char> expected = fst_test::read_npy(golden).bytes;
                const std::string path = temp_path("golden.tier");
                fst_cache_config cfg = fst_cache_default_config();
                cfg.head_dim_k = cfg.head_dim_v = n;
                cfg.tiers[0] = fst_cache_tier{FST_TYPE_F32, 1, nullptr};
                cfg.tiers[1] = fst_cache_tier{type, 0, in_file ? path.c_str() : nullptr};
                cfg.migrate_chunk = 1;
                flashstate::Cache cache(cfg);
                fst_tensor k = fst_tensor_contiguous(FST_TYPE_F32, n, 1, 1, 1, row.data());
                cache.append(0, k, k);
                cache.append(0, k, k); // moves the first token to the cold tier
                const auto segs = cache.segments(0);
                ASSERT_EQ(segs.segments.size(), 2u);
                const fst_tensor &cold_k = *segs.segments[0].k, &cold_v = *segs.segments[0].v;
                ASSERT_EQ(cold_k.type, type);
                ASSERT_EQ(cold_k.ne[1], 1);
                EXPECT_EQ(segs.segments[0].kv_pos0, 0);
                EXPECT_EQ(segs.segments[1].kv_pos0, 1);
                const auto *kb = static_cast<const unsigned char *>(cold_k.data);
                const auto *vb = static_cast<const unsigned char *>(cold_v.data);
                EXPECT_EQ(std::vector<unsigned char>(kb, kb + expected.size()), expected);
                EXPECT_EQ(std::vector<unsigned char>(vb, vb + expected.size()), expected);
                ++checked;
            }
    }
    EXPECT_GE(checked, 40);
}

// A caller can merge the cache's result with another partial (SPEC state): attention over the cache and then over
// extra keys outside it equals the reference over both.
TEST(Cache, ResultMergesWithOtherPartials) {
    fst_cache_config cfg = fst_cache_default_config();
    cfg.head_dim_k = cfg.head_dim_v = 64;
    cfg.tiers[0] = fst_cache_tier{FST_TYPE_F16, 16, nullptr};
    cfg.migrate_chunk = 8;
    flashstate::Cache cache(cfg);
    std::mt19937 rng(9);
    Rows rows(64, 64, 50, 1, rng), extra(64, 64, 7, 1, rng);
    cache.append(0, rows.k.t, rows.v.t);
    Buffer q(FST_TYPE_F32, {64, 2, 4, 1});
    q.fill_normal(rng);
    flashstate::Params p;
    p.scale(0.2f).threads(1);
    Result r(64, 4, 2);
    cache.attn(p, 0, q.t, nullptr, r.state.t, r.out.t);
    p.kv_pos0(50);
    flashstate::attn_with_state(p, q.t, extra.k.t, extra.v.t, r.state.t, r.out.t);

    Stored s = read_stored(cache.handle(), 0, 64, 64, 1);
    Buffer k_all(FST_TYPE_F32, {64, 57, 1, 1}), v_all(FST_TYPE_F32, {64, 57, 1, 1});
    for (int64_t j = 0; j < 57; ++j) {
        std::copy_n(j < 50 ? s.k.f32(0, j) : extra.k.f32(0, j - 50), 64, k_all.f32(0, j));
        std::copy_n(j < 50 ? s.v.f32(0, j) : extra.v.f32(0, j - 50), 64, v_all.f32(0, j));
    }
    p.kv_pos0(0);
    EXPECT_LE(ref::rel_error(ref::attention(p, q.t, k_all.t, v_all.t, nullptr, nullptr), r.out.t), 1e-5);
}

TEST(Cache, EmptyCacheLeavesTheStateEmpty) {
    flashstate::Cache cache(flashstate::Cache::default_config());
    std::mt19937 rng(1);
    Buffer q(FST_TYPE_F32, {128, 1, 2, 1});
    q.fill_normal(rng);
    Result r(128, 2, 1);
    cache.attn(flashstate::Params(), 0, q.t, nullptr, r.state.t, r.out.t);
    for (int64_t h = 0; h < 2; ++h) {
        EXPECT_EQ(fst_test::state_s(r.state.t, h, 0, 0), 0.0f);
        EXPECT_EQ(*r.out.f32(0, h), 0.0f);
    }
}

} // namespace
