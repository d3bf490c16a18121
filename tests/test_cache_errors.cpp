// Misuse of the cache gets a status and a message naming the argument, the field, the actual and the expected
// value, and changes nothing: bad configs, appends of the wrong shape or type, queries that do not match the cache,
// layers out of range, missing or unwritable files.
#include "support/cache_support.h"

#include <flashstate/flashstate.hpp>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <unistd.h>
#include <vector>

using namespace cache_test;

namespace {

void expect_message(const std::vector<std::string> &pieces) {
    const std::string message = fst_last_error();
    for (const std::string &piece : pieces)
        EXPECT_NE(message.find(piece), std::string::npos) << "message \"" << message << "\" lacks \"" << piece << "\"";
}

fst_cache_config three_tiers() {
    fst_cache_config c = fst_cache_default_config();
    c.n_layer = 2;
    c.n_head_kv = 2;
    c.head_dim_k = 64;
    c.head_dim_v = 32;
    c.n_tiers = 3;
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 16, nullptr};
    c.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 32, nullptr};
    c.tiers[2] = fst_cache_tier{FST_TYPE_Q4_0, 0, nullptr};
    c.migrate_chunk = 8;
    return c;
}

struct ConfigCase {
    const char *what;
    std::function<void(fst_cache_config &)> change;
    fst_status status;
    std::vector<std::string> pieces;
};

TEST(CacheErrors, BadConfigsAreRejectedWithTheField) {
    const std::vector<ConfigCase> cases = {
        {"n_layer 0", [](auto &c) { c.n_layer = 0; }, FST_ERR_INVALID_ARGUMENT, {"config.n_layer = 0", "expected 1 .. 65536"}},
        {"n_head_kv 0", [](auto &c) { c.n_head_kv = 0; }, FST_ERR_INVALID_ARGUMENT, {"config.n_head_kv = 0"}},
        {"head_dim_k -1", [](auto &c) { c.head_dim_k = -1; }, FST_ERR_INVALID_ARGUMENT, {"config.head_dim_k = -1"}},
        {"n_tiers 0", [](auto &c) { c.n_tiers = 0; }, FST_ERR_INVALID_ARGUMENT, {"config.n_tiers = 0", "1 .. 8"}},
        {"n_tiers 9", [](auto &c) { c.n_tiers = 9; }, FST_ERR_INVALID_ARGUMENT, {"config.n_tiers = 9"}},
        {"hot q8_0", [](auto &c) { c.tiers[0].type = FST_TYPE_Q8_0; }, FST_ERR_UNSUPPORTED,
         {"config.tiers[0].type = q8_0", "f32 or f16"}},
        {"hot bf16", [](auto &c) { c.tiers[0].type = FST_TYPE_BF16; }, FST_ERR_UNSUPPORTED, {"tiers[0].type = bf16"}},
        {"hot unknown type", [](auto &c) { c.tiers[0].type = fst_type(77); }, FST_ERR_UNSUPPORTED,
         {"tiers[0].type = unknown"}},
        {"cold f16", [](auto &c) { c.tiers[1].type = FST_TYPE_F16; }, FST_ERR_UNSUPPORTED,
         {"config.tiers[1].type = f16", "q8_0 or q4_0"}},
        {"D not multiple of 32", [](auto &c) { c.head_dim_k = 40; }, FST_ERR_INVALID_ARGUMENT,
         {"config.head_dim_k = 40", "a multiple of 32", "q8_0"}},
        {"DV not multiple of 32", [](auto &c) { c.head_dim_v = 48; }, FST_ERR_INVALID_ARGUMENT,
         {"config.head_dim_v = 48", "a multiple of 32"}},
        {"capacity 0 on a middle tier", [](auto &c) { c.tiers[1].capacity = 0; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[1].capacity = 0", ">= migrate_chunk = 8"}},
        {"hot capacity below chunk", [](auto &c) { c.tiers[0].capacity = 4; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[0].capacity = 4", "migrate_chunk = 8"}},
        {"negative capacity", [](auto &c) { c.tiers[2].capacity = -5; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[2].capacity = -5"}},
        {"migrate_chunk 0", [](auto &c) { c.migrate_chunk = 0; }, FST_ERR_INVALID_ARGUMENT, {"config.migrate_chunk = 0"}},
        {"path on the hot tier", [](auto &c) { c.tiers[0].path = "x"; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[0].path = 'x'", "RAM"}},
        {"path on a middle tier", [](auto &c) { c.tiers[1].path = "x"; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[1].path = 'x'", "only the last tier, tiers[2]"}},
        {"empty path", [](auto &c) { c.tiers[2].path = ""; }, FST_ERR_INVALID_ARGUMENT, {"config.tiers[2].path = ''"}},
        {"ring too large for memory", [](auto &c) { c.tiers[1].capacity = int64_t(1) << 39; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[1].capacity = 549755813888", "2^46 bytes"}},
        {"first block of the growing last tier too large",
         [](auto &c) { c.n_tiers = 1, c.tiers[0] = fst_cache_tier{FST_TYPE_F32, 0, nullptr}, c.migrate_chunk = int64_t(1) << 38; },
         FST_ERR_INVALID_ARGUMENT, {"config.migrate_chunk = 274877906944", "2^46 bytes"}},
        {"last tier sized by max_tokens too large", [](auto &c) { c.max_tokens = int64_t(1) << 40; },
         FST_ERR_INVALID_ARGUMENT, {"config.tiers[2].capacity = 1099511627776", "2^46 bytes"}},
        {"negative n_keep", [](auto &c) { c.n_keep = -1; }, FST_ERR_INVALID_ARGUMENT, {"config.n_keep = -1"}},
        {"max_tokens <= n_keep", [](auto &c) { c.n_keep = 10, c.max_tokens = 10; }, FST_ERR_INVALID_ARGUMENT,
         {"config.max_tokens = 10", "> n_keep = 10"}},
        {"bounded last tier without max_tokens", [](auto &c) { c.tiers[2].capacity = 64; }, FST_ERR_INVALID_ARGUMENT,
         {"config.tiers[2].capacity = 64", "needs max_tokens"}},
        {"bounded last tier too small", [](auto &c) { c.tiers[2].capacity = 64, c.max_tokens = 100, c.n_keep = 4; },
         FST_ERR_INVALID_ARGUMENT, {"config.tiers[2].capacity = 64", "max_tokens - n_keep = 96"}},
    };
    for (const ConfigCase &k : cases) {
        SCOPED_TRACE(k.what);
        fst_cache_config c = three_tiers();
        k.change(c);
        fst_cache *cache = reinterpret_cast<fst_cache *>(0x1);
        EXPECT_EQ(fst_cache_create(&c, &cache), k.status) << fst_last_error();
        EXPECT_EQ(cache, reinterpret_cast<fst_cache *>(0x1)) << "the handle is untouched on failure";
        expect_message(k.pieces);
        expect_message({"fst_cache_create"});
    }
    fst_cache *cache = nullptr;
    EXPECT_EQ(fst_cache_create(nullptr, &cache), FST_ERR_INVALID_ARGUMENT);
    expect_message({"config.pointer = NULL"});
    const fst_cache_config c = three_tiers();
    EXPECT_EQ(fst_cache_create(&c, nullptr), FST_ERR_INVALID_ARGUMENT);
    expect_message({"cache.pointer = NULL"});
}

struct AppendCase {
    const char *what;
    std::function<void(fst_tensor &k, fst_tensor &v)> change;
    fst_status status;
    std::vector<std::string> pieces;
};

TEST(CacheErrors, BadAppendsChangeNothing) {
    const fst_cache_config cfg = three_tiers();
    flashstate::Cache cache(cfg);
    std::mt19937 rng(2);
    Rows rows(64, 32, 5, 2, rng);
    cache.append(1, rows.k.t, rows.v.t);
    Buffer q8(FST_TYPE_Q8_0, {64, 5, 2, 1});
    const std::vector<AppendCase> cases = {
        {"k of a quantized type", [&](auto &k, auto &) { k = q8.t; }, FST_ERR_UNSUPPORTED, {"k.type = 8 (q8_0)", "f32, f16"}},
        {"v of bf16", [](auto &, auto &v) { v.type = FST_TYPE_BF16, v.nb[0] = 2; }, FST_ERR_UNSUPPORTED, {"v.type = 30 (bf16)"}},
        {"k.ne[0] != D", [](auto &k, auto &) { k.ne[0] = 32; }, FST_ERR_INVALID_ARGUMENT,
         {"k.ne[0] = 32", "expected 64", "head_dim_k"}},
        {"v.ne[0] != DV", [](auto &, auto &v) { v.ne[0] = 16; }, FST_ERR_INVALID_ARGUMENT, {"v.ne[0] = 16", "expected 32"}},
        {"k heads", [](auto &k, auto &) { k.ne[2] = 1; }, FST_ERR_INVALID_ARGUMENT, {"k.ne[2] = 1", "expected 2", "n_head_kv"}},
        {"v heads", [](auto &, auto &v) { v.ne[2] = 1; }, FST_ERR_INVALID_ARGUMENT, {"v.ne[2] = 1", "n_head_kv"}},
        {"token counts differ", [](auto &, auto &v) { v.ne[1] = 4; }, FST_ERR_INVALID_ARGUMENT,
         {"v.ne[1] = 4", "expected 5", "k.ne[1]"}},
        {"zero tokens", [](auto &k, auto &v) { k.ne[1] = v.ne[1] = 0; }, FST_ERR_INVALID_ARGUMENT, {"k.ne[1] = 0", ">= 1"}},
        {"two sequences", [](auto &k, auto &) { k.ne[3] = 2; }, FST_ERR_INVALID_ARGUMENT, {"k.ne[3] = 2", "one sequence"}},
        {"NULL data", [](auto &k, auto &) { k.data = nullptr; }, FST_ERR_INVALID_ARGUMENT, {"k.data = NULL"}},
        {"bad nb[0]", [](auto &, auto &v) { v.nb[0] = 8; }, FST_ERR_INVALID_ARGUMENT, {"v.nb[0] = 8"}},
    };
    for (const AppendCase &a : cases) {
        SCOPED_TRACE(a.what);
        fst_tensor k = rows.k.t, v = rows.v.t;
        a.change(k, v);
        EXPECT_EQ(fst_cache_append(cache.handle(), 1, &k, &v), a.status) << fst_last_error();
        expect_message(a.pieces);
        expect_message({"fst_cache_append"});
        EXPECT_EQ(cache.n_tokens(1), 5);
        EXPECT_EQ(cache.next_pos(1), 5);
    }
    EXPECT_EQ(fst_cache_append(cache.handle(), 1, nullptr, &rows.v.t), FST_ERR_INVALID_ARGUMENT);
    expect_message({"k.pointer = NULL"});
    EXPECT_EQ(fst_cache_append(nullptr, 0, &rows.k.t, &rows.v.t), FST_ERR_INVALID_ARGUMENT);
    expect_message({"cache.pointer = NULL"});
    for (int32_t layer : {-1, 2}) {
        EXPECT_EQ(fst_cache_append(cache.handle(), layer, &rows.k.t, &rows.v.t), FST_ERR_INVALID_ARGUMENT);
        expect_message({"layer.index = " + std::to_string(layer), "0 .. 1", "n_layer = 2"});
    }
    EXPECT_EQ(cache.n_tokens(0), 0);
    // Through the C++ layer: the same message in an exception.
    fst_tensor short_k = rows.k.t;
    short_k.ne[0] = 32;
    try {
        cache.append(0, short_k, rows.v.t);
        ADD_FAILURE() << "no exception";
    } catch (const flashstate::Error &e) {
        EXPECT_EQ(e.status(), FST_ERR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(e.what()).find("k.ne[0] = 32"), std::string::npos) << e.what();
    }
}

TEST(CacheErrors, QueriesThatDoNotMatchTheCache) {
    const fst_cache_config cfg = three_tiers();
    flashstate::Cache cache(cfg);
    std::mt19937 rng(4);
    Rows rows(64, 32, 20, 2, rng);
    cache.append(0, rows.k.t, rows.v.t);
    fst_attn_params p = fst_attn_default_params();
    struct QueryCase {
        const char *what;
        std::array<int64_t, 4> q_ne;
        int64_t out_dv;
        std::vector<std::string> pieces;
    };
    const std::vector<QueryCase> cases = {
        {"D", {32, 1, 4, 1}, 32, {"q.ne[0] = 32", "expected 64", "head_dim_k"}},
        {"heads not a multiple", {64, 1, 3, 1}, 32, {"q.ne[2] = 3", "multiple of the cache's n_head_kv = 2"}},
        {"two sequences", {64, 1, 4, 2}, 32, {"q.ne[3] = 2", "one sequence"}},
        {"out of the wrong DV", {64, 1, 4, 1}, 64, {"out", "ne[0] = 64"}},
    };
    for (const QueryCase &k : cases) {
        SCOPED_TRACE(k.what);
        Buffer q(FST_TYPE_F32, k.q_ne);
        Buffer state(FST_TYPE_F32, {2, k.q_ne[2], k.q_ne[1], k.q_ne[3]});
        Buffer out(FST_TYPE_F32, {k.out_dv, k.q_ne[2], k.q_ne[1], k.q_ne[3]});
        state.fill_bytes(0x5a);
        out.fill_bytes(0x5a);
        EXPECT_NE(fst_cache_attn(cache.handle(), &p, 0, &q.t, nullptr, &state.t, &out.t), FST_OK);
        expect_message(k.pieces);
        expect_message({"fst_cache_attn"});
        for (unsigned char b : state.storage) ASSERT_EQ(b, 0x5a) << "state written on failure";
        for (unsigned char b : out.storage) ASSERT_EQ(b, 0x5a) << "out written on failure";
    }
    Buffer q(FST_TYPE_F32, {64, 1, 4, 1});
    Result r(32, 4, 1);
    EXPECT_EQ(fst_cache_attn(cache.handle(), &p, 5, &q.t, nullptr, &r.state.t, &r.out.t), FST_ERR_INVALID_ARGUMENT);
    expect_message({"layer.index = 5"});
    EXPECT_EQ(fst_cache_attn(cache.handle(), nullptr, 0, &q.t, nullptr, &r.state.t, &r.out.t), FST_ERR_INVALID_ARGUMENT);
    expect_message({"params.pointer = NULL"});

    fst_cache_tier_stats stats[4];
    EXPECT_EQ(fst_cache_stats(cache.handle(), 0, stats, 3), FST_ERR_INVALID_ARGUMENT);
    expect_message({"n_stats.value = 3", "4 (config.n_tiers + 1"});
    int64_t n = 0;
    EXPECT_EQ(fst_cache_segments(cache.handle(), 0, nullptr, nullptr, -1, &n), FST_ERR_INVALID_ARGUMENT);
    expect_message({"capacity.value = -1"});
    EXPECT_EQ(fst_cache_segments(cache.handle(), 0, nullptr, nullptr, 4, &n), FST_ERR_INVALID_ARGUMENT);
    expect_message({"segments.pointer = NULL"});
    // Too small an array: the count comes back, nothing is written.
    fst_segment one{};
    fst_tensor views[2] = {};
    EXPECT_EQ(fst_cache_segments(cache.handle(), 0, &one, views, 1, &n), FST_OK);
    EXPECT_EQ(n, 3) << "8 tokens in the Q8_0 tier, 12 in the hot ring, wrapped around its end";
    EXPECT_EQ(one.k, nullptr);
}

TEST(CacheErrors, UnwritableMissingAndCorruptFiles) {
    fst_cache_config cfg = three_tiers();
    cfg.tiers[2].path = "/nonexistent-dir-flashstate/tier.bin";
    fst_cache *cache = nullptr;
    EXPECT_EQ(fst_cache_create(&cfg, &cache), FST_ERR_IO);
    expect_message({"cannot create the file-backed tier", "/nonexistent-dir-flashstate/tier.bin", "No such file"});
    EXPECT_EQ(cache, nullptr);

    flashstate::Cache ok(three_tiers());
    EXPECT_EQ(fst_cache_save(ok.handle(), "/nonexistent-dir-flashstate/cache.fst"), FST_ERR_IO);
    expect_message({"fst_cache_save", "/nonexistent-dir-flashstate/cache.fst", "No such file"});
    EXPECT_EQ(fst_cache_save(ok.handle(), nullptr), FST_ERR_INVALID_ARGUMENT);
    expect_message({"path.pointer = NULL"});

    EXPECT_EQ(fst_cache_load("/nonexistent-dir-flashstate/cache.fst", nullptr, &cache), FST_ERR_IO);
    expect_message({"fst_cache_load", "cannot open", "/nonexistent-dir-flashstate/cache.fst"});
    EXPECT_EQ(cache, nullptr);

    const std::string junk =
        (std::filesystem::temp_directory_path() / ("fst_cache_junk_" + std::to_string(::getpid()))).string();
    {
        std::FILE *f = std::fopen(junk.c_str(), "wb");
        ASSERT_NE(f, nullptr);
        std::fputs("this is not a cache file, but it is longer than a header", f);
        std::fclose(f);
    }
    EXPECT_EQ(fst_cache_load(junk.c_str(), nullptr, &cache), FST_ERR_CORRUPT);
    expect_message({junk, "FSTCACHE"});
    std::filesystem::remove(junk);
}

} // namespace
