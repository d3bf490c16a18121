// Saving and loading a whole cache (docs/cache.md, "File format"):
//   - round trip: the loaded cache holds the same bytes at the same positions, attends bit for bit like the
//     original, and appends continue identically;
//   - a file cut at every byte offset, and a file with any single bit flipped, is rejected with FST_ERR_CORRUPT
//     (never a crash, never a cache);
//   - a well-formed file of another format version is FST_ERR_UNSUPPORTED; saving replaces a file atomically and
//     leaves no temporary file; a file-backed tier in use by another live cache is not taken over.
#include "support/cache_support.h"

#include <flashstate/flashstate.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>
#include <vector>

using namespace cache_test;
namespace fs = std::filesystem;

namespace {

// A directory of its own per test process, removed at the end.
struct TempDir {
    fs::path dir;
    TempDir() {
        dir = fs::temp_directory_path() / ("fst_cache_persist_" + std::to_string(::getpid()));
        fs::create_directories(dir);
    }
    ~TempDir() { fs::remove_all(dir); }
    std::string operator/(const std::string &name) const { return (dir / name).string(); }
};

std::vector<unsigned char> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(f), {});
}
void write_file(const std::string &path, const unsigned char *data, size_t n) {
    std::FILE *f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr) << path;
    if (n > 0) ASSERT_EQ(std::fwrite(data, 1, n, f), n);
    std::fclose(f);
}

// CRC-32 (IEEE), bit by bit: written here, independently of the library's table version.
uint32_t crc32_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
        c ^= p[i];
        for (int b = 0; b < 8; ++b) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

fst_cache_config mixed_config(const char *file_path) {
    fst_cache_config c = fst_cache_default_config();
    c.n_layer = 2;
    c.n_head_kv = 2;
    c.head_dim_k = 64;
    c.head_dim_v = 32;
    c.n_tiers = 4;
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 12, nullptr};
    c.tiers[1] = fst_cache_tier{FST_TYPE_Q8_0, 16, nullptr};
    c.tiers[2] = fst_cache_tier{FST_TYPE_Q4_0, 8, nullptr};
    c.tiers[3] = fst_cache_tier{FST_TYPE_BF16, 0, file_path};
    c.n_keep = 3;
    c.migrate_chunk = 4;
    return c;
}

// Attention of fixed queries over a layer, bit for bit comparable: state and out bytes.
std::vector<unsigned char> attend(flashstate::Cache &cache, int32_t layer, uint32_t seed) {
    std::mt19937 rng(seed);
    Buffer q(FST_TYPE_F32, {64, 3, 4, 1});
    q.fill_normal(rng);
    Result r(32, 4, 3);
    flashstate::Params p;
    p.scale(0.3f).causal(cache.next_pos(layer) - 3, 0);
    cache.attn(p, layer, q.t, nullptr, r.state.t, r.out.t);
    std::vector<unsigned char> bytes(r.state.storage);
    bytes.insert(bytes.end(), r.out.storage.begin(), r.out.storage.end());
    return bytes;
}

void expect_same_contents(flashstate::Cache &a, flashstate::Cache &b, int32_t layer) {
    const Stored sa = read_stored(a.handle(), layer, 64, 32, 2), sb = read_stored(b.handle(), layer, 64, 32, 2);
    EXPECT_EQ(positions(sa), positions(sb));
    EXPECT_EQ(sa.k_bytes, sb.k_bytes);
    EXPECT_EQ(sa.v_bytes, sb.v_bytes);
    EXPECT_EQ(sa.type, sb.type);
    const auto ga = a.segments(layer), gb = b.segments(layer);
    ASSERT_EQ(ga.segments.size(), gb.segments.size()) << "the same split into segments (same ring starts)";
    for (size_t i = 0; i < ga.segments.size(); ++i) {
        EXPECT_EQ(ga.segments[i].kv_pos0, gb.segments[i].kv_pos0);
        EXPECT_EQ(ga.segments[i].k->ne[1], gb.segments[i].k->ne[1]);
    }
    const auto st_a = a.stats(layer), st_b = b.stats(layer);
    for (size_t i = 0; i < st_a.size(); ++i) {
        EXPECT_EQ(st_a[i].n_tokens, st_b[i].n_tokens);
        // Rings are allocated whole; a growing tier may have reserved one more block than its tokens need.
        if (st_a[i].capacity > 0) EXPECT_EQ(st_a[i].bytes, st_b[i].bytes);
    }
}

TEST(CachePersist, RoundTripAttendsAndContinuesBitForBit) {
    TempDir tmp;
    const std::string tier_a = tmp / "a.tier", tier_b = tmp / "b.tier", saved = tmp / "cache.fst";
    flashstate::Cache a(mixed_config(tier_a.c_str()));
    std::mt19937 rng(11);
    Rows first(64, 32, 300, 2, rng), more(64, 32, 300, 2, rng);
    int64_t done = 0;
    for (int64_t n : {1, 5, 17, 2, 40, 3, 9}) { // wrapped rings, a log tier past its first extent
        for (int32_t l = 0; l < 2; ++l) a.append(l, token_slice(first.k.t, done, n), token_slice(first.v.t, done, n));
        done += n;
    }
    a.save(saved.c_str());
    EXPECT_EQ(std::distance(fs::directory_iterator(tmp.dir), fs::directory_iterator{}), 2) << "no temporary left";

    flashstate::Cache b = flashstate::Cache::load(saved.c_str(), tier_b.c_str());
    const fst_cache_config ca = a.config(), cb = b.config();
    EXPECT_STREQ(cb.tiers[3].path, tier_b.c_str());
    EXPECT_TRUE(fs::exists(tier_b));
    EXPECT_EQ(cb.n_keep, ca.n_keep);
    EXPECT_EQ(cb.migrate_chunk, ca.migrate_chunk);
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(cb.tiers[i].type, ca.tiers[i].type);
        EXPECT_EQ(cb.tiers[i].capacity, ca.tiers[i].capacity);
    }
    for (int32_t l = 0; l < 2; ++l) {
        EXPECT_EQ(b.n_tokens(l), a.n_tokens(l));
        EXPECT_EQ(b.next_pos(l), a.next_pos(l));
        expect_same_contents(a, b, l);
        EXPECT_EQ(attend(a, l, 5), attend(b, l, 5));
    }
    int64_t extra = 0;
    for (int64_t n : {7, 1, 30, 4}) {
        for (int32_t l = 0; l < 2; ++l) {
            a.append(l, token_slice(more.k.t, extra, n), token_slice(more.v.t, extra, n));
            b.append(l, token_slice(more.k.t, extra, n), token_slice(more.v.t, extra, n));
        }
        extra += n;
        for (int32_t l = 0; l < 2; ++l) {
            expect_same_contents(a, b, l);
            EXPECT_EQ(attend(a, l, uint32_t(extra)), attend(b, l, uint32_t(extra)));
        }
    }
    // Loading without a tier path uses the saved one, which the live cache `a` holds: refused, not taken over.
    fst_cache *c = nullptr;
    EXPECT_EQ(fst_cache_load(saved.c_str(), nullptr, &c), FST_ERR_IO);
    EXPECT_NE(std::string(fst_last_error()).find("in use by another live cache"), std::string::npos) << fst_last_error();
    EXPECT_EQ(c, nullptr);
}

TEST(CachePersist, StreamingCacheRoundTrip) {
    TempDir tmp;
    fst_cache_config cfg = mixed_config(nullptr);
    cfg.n_tiers = 3;
    cfg.tiers[2].capacity = 0; // sized to max_tokens - n_keep
    cfg.n_keep = 2;
    cfg.max_tokens = 40;
    flashstate::Cache a(cfg);
    std::mt19937 rng(12);
    Rows rows(64, 32, 100, 2, rng);
    a.append(0, token_slice(rows.k.t, 0, 77), token_slice(rows.v.t, 0, 77));
    a.save((tmp / "s.fst").c_str());
    flashstate::Cache b = flashstate::Cache::load((tmp / "s.fst").c_str());
    expect_same_contents(a, b, 0);
    EXPECT_EQ(positions(read_stored(b.handle(), 0, 64, 32, 2)), expected_positions(77, 2, 40));
    a.append(0, token_slice(rows.k.t, 77, 23), token_slice(rows.v.t, 77, 23));
    b.append(0, token_slice(rows.k.t, 77, 23), token_slice(rows.v.t, 77, 23));
    expect_same_contents(a, b, 0);
    EXPECT_EQ(attend(a, 0, 1), attend(b, 0, 1));
}

// A small cache file (hot F16, Q4_0 and a file-backed Q8_0 tier, n_keep) for the exhaustive corruption tests.
std::vector<unsigned char> small_cache_file(const TempDir &tmp) {
    fst_cache_config c = fst_cache_default_config();
    c.head_dim_k = c.head_dim_v = 32;
    c.n_tiers = 3;
    const std::string tier = tmp / "small.tier";
    c.tiers[0] = fst_cache_tier{FST_TYPE_F16, 2, nullptr};
    c.tiers[1] = fst_cache_tier{FST_TYPE_Q4_0, 2, nullptr};
    c.tiers[2] = fst_cache_tier{FST_TYPE_Q8_0, 0, tier.c_str()};
    c.n_keep = 1;
    c.migrate_chunk = 1;
    flashstate::Cache cache(c);
    std::mt19937 rng(13);
    Rows rows(32, 32, 6, 1, rng);
    cache.append(0, rows.k.t, rows.v.t);
    const auto stats = cache.stats(0);
    EXPECT_EQ(stats[2].n_tokens, 1) << "every tier holds something";
    const std::string path = tmp / "small.fst";
    cache.save(path.c_str());
    return read_file(path);
}

TEST(CachePersist, EveryTruncationIsRejected) {
    TempDir tmp;
    const std::vector<unsigned char> file = small_cache_file(tmp);
    ASSERT_GT(file.size(), 100u);
    const std::string path = tmp / "cut.fst", tier = tmp / "cut.tier";
    for (size_t n = 0; n < file.size(); ++n) {
        write_file(path, file.data(), n);
        fst_cache *cache = nullptr;
        const fst_status s = fst_cache_load(path.c_str(), tier.c_str(), &cache);
        ASSERT_EQ(s, FST_ERR_CORRUPT) << "cut at " << n << " of " << file.size() << ": " << fst_last_error();
        ASSERT_EQ(cache, nullptr);
        ASSERT_NE(std::string(fst_last_error()).find(path), std::string::npos) << fst_last_error();
    }
    EXPECT_FALSE(fs::exists(tier)) << "nothing is created from a rejected file";
    write_file(path, file.data(), file.size());
    fst_cache *cache = nullptr;
    ASSERT_EQ(fst_cache_load(path.c_str(), tier.c_str(), &cache), FST_OK) << fst_last_error();
    fst_cache_free(cache);
    // One byte too many is as wrong as one too few.
    std::vector<unsigned char> longer = file;
    longer.push_back(0);
    write_file(path, longer.data(), longer.size());
    EXPECT_EQ(fst_cache_load(path.c_str(), tier.c_str(), &cache), FST_ERR_CORRUPT);
}

TEST(CachePersist, EverySingleBitFlipIsRejected) {
    TempDir tmp;
    std::vector<unsigned char> file = small_cache_file(tmp);
    const std::string path = tmp / "flip.fst", tier = tmp / "flip.tier";
    for (size_t byte = 0; byte < file.size(); ++byte)
        for (int bit = 0; bit < 8; ++bit) {
            file[byte] ^= uint8_t(1u << bit);
            write_file(path, file.data(), file.size());
            file[byte] ^= uint8_t(1u << bit);
            fst_cache *cache = nullptr;
            const fst_status s = fst_cache_load(path.c_str(), tier.c_str(), &cache);
            ASSERT_EQ(s, FST_ERR_CORRUPT) << "byte " << byte << " bit " << bit << ": " << fst_last_error();
            ASSERT_EQ(cache, nullptr);
        }
}

TEST(CachePersist, OtherFormatVersionIsUnsupported) {
    TempDir tmp;
    std::vector<unsigned char> file = small_cache_file(tmp);
    const uint32_t version = 2;
    std::memcpy(&file[8], &version, 4);
    const uint32_t crc = crc32_bitwise(file.data(), 28);
    std::memcpy(&file[28], &crc, 4);
    const std::string path = tmp / "v2.fst";
    write_file(path, file.data(), file.size());
    fst_cache *cache = nullptr;
    EXPECT_EQ(fst_cache_load(path.c_str(), nullptr, &cache), FST_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(fst_last_error()).find("format version 2"), std::string::npos) << fst_last_error();
}

// The checksums are standard CRC-32: the header's is that of its first 28 bytes (an outside tool can check it).
TEST(CachePersist, HeaderLayoutAndChecksum) {
    TempDir tmp;
    const std::vector<unsigned char> file = small_cache_file(tmp);
    EXPECT_EQ(std::string(file.begin(), file.begin() + 8), "FSTCACHE");
    uint32_t version, header_bytes, n_sections, crc;
    uint64_t file_bytes;
    std::memcpy(&version, &file[8], 4);
    std::memcpy(&header_bytes, &file[12], 4);
    std::memcpy(&file_bytes, &file[16], 8);
    std::memcpy(&n_sections, &file[24], 4);
    std::memcpy(&crc, &file[28], 4);
    EXPECT_EQ(version, 1u);
    EXPECT_EQ(header_bytes, 32u);
    EXPECT_EQ(file_bytes, file.size());
    EXPECT_EQ(n_sections, 2u);
    EXPECT_EQ(crc, crc32_bitwise(file.data(), 28));
}

TEST(CachePersist, SaveReplacesAFileAtomically) {
    TempDir tmp;
    const std::string path = tmp / "x.fst";
    write_file(path, reinterpret_cast<const unsigned char *>("old"), 3);
    fst_cache_config c = fst_cache_default_config();
    c.head_dim_k = c.head_dim_v = 32;
    flashstate::Cache cache(c);
    std::mt19937 rng(14);
    Rows rows(32, 32, 3, 1, rng);
    cache.append(0, rows.k.t, rows.v.t);
    cache.save(path.c_str());
    EXPECT_EQ(flashstate::Cache::load(path.c_str()).n_tokens(0), 3);
    EXPECT_EQ(std::distance(fs::directory_iterator(tmp.dir), fs::directory_iterator{}), 1) << "no temporary left";
    // A directory where the file should go: the rename fails, the temporary is removed.
    fs::create_directories(tmp.dir / "dir.fst" / "inside");
    EXPECT_EQ(cache.try_save((tmp / "dir.fst").c_str()).code(), FST_ERR_IO);
    EXPECT_EQ(std::distance(fs::directory_iterator(tmp.dir), fs::directory_iterator{}), 2);
    // Loading a directory is an I/O error, not a crash.
    fst_cache *loaded = nullptr;
    EXPECT_EQ(fst_cache_load((tmp / "dir.fst").c_str(), nullptr, &loaded), FST_ERR_IO) << fst_last_error();
}

TEST(CachePersist, FileTierInUseIsNotTakenOver) {
    TempDir tmp;
    const std::string tier = tmp / "shared.tier";
    fst_cache_config c = fst_cache_default_config();
    c.tiers[1].path = tier.c_str();
    flashstate::Cache first(c);
    fst_cache *second = nullptr;
    EXPECT_EQ(fst_cache_create(&c, &second), FST_ERR_IO);
    EXPECT_NE(std::string(fst_last_error()).find("in use by another live cache"), std::string::npos) << fst_last_error();
    EXPECT_EQ(second, nullptr);
}

} // namespace
