// fuzz_cache's files: per-process scratch paths, and the cache file format (docs/cache.md) read and patched
// independently of the library: CRC-32, checksums rewritten for mode 2, and a first look at the config section.
#pragma once

#include "fuzz_support.h"

#include <unistd.h>

namespace fuzz {

// Per-process scratch files under /tmp (reused by every input, removed at exit).
struct Paths {
    std::string base = "/tmp/fuzz_cache-" + std::to_string(::getpid());
    std::string input = base + ".in", tier = base + ".tier", tier2 = base + ".tier2", save = base + ".save",
                bad = base + ".bad";
    ~Paths() {
        for (const std::string *p : {&input, &tier, &tier2, &save, &bad}) std::remove(p->c_str());
    }
};
inline const Paths &paths() {
    static const Paths p;
    return p;
}

inline void write_file(const std::string &path, const void *data, size_t n) {
    std::FILE *f = std::fopen(path.c_str(), "wb");
    if (!f || (n && std::fwrite(data, 1, n, f) != n) || std::fclose(f) != 0) fail("cannot write " + path);
}
inline std::vector<unsigned char> read_file(const std::string &path) {
    std::vector<unsigned char> d;
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) fail("cannot read " + path);
    unsigned char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) d.insert(d.end(), buf, buf + n);
    std::fclose(f);
    return d;
}

// CRC-32, IEEE polynomial (zlib's), bit by bit: written from the format's description, not the library's.
inline uint32_t crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; ++i) {
        c ^= p[i];
        for (int b = 0; b < 8; ++b) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}
template <class T> T load_le(const std::vector<unsigned char> &d, size_t at) {
    T v{};
    if (at + sizeof v <= d.size()) std::memcpy(&v, &d[at], sizeof v);
    return v;
}
template <class T> void store_le(std::vector<unsigned char> &d, size_t at, T v) {
    if (at + sizeof v <= d.size()) std::memcpy(&d[at], &v, sizeof v);
}

// Mode 2: the header's file size and checksum, and each section's checksum, made right.
inline void fix_checksums(std::vector<unsigned char> &d) {
    if (d.size() < 32) return;
    store_le<uint64_t>(d, 16, d.size());
    store_le<uint32_t>(d, 28, crc32(d.data(), 28));
    size_t off = 32;
    for (uint32_t s = 0, n = load_le<uint32_t>(d, 24); s < n && d.size() - off >= 20; ++s) {
        const uint64_t bytes = load_le<uint64_t>(d, off + 8);
        if (bytes > d.size() - off - 20) return;
        const size_t end = off + 16 + size_t(bytes);
        store_le<uint32_t>(d, end, crc32(&d[off], end - off));
        off = end + 4;
    }
}

// What the harness reads of a file's config section (same layout as the library, parsed independently): whether
// a load could allocate more than a fuzz input should (skipped then: a real machine may hold it) and the file-backed
// tier's saved path. A file the harness cannot parse is loaded only with an explicit file_tier_path, so the library
// never creates or deletes a file at a path taken from the fuzzer's bytes (it is ours only when it is paths().tier).
struct FileConfig {
    bool parsed = false, too_big = false, has_path = false;
    std::string path;
};
inline FileConfig peek_config(const std::vector<unsigned char> &d) {
    FileConfig fc;
    if (d.size() < 32 + 16) return fc;
    const uint64_t bytes = load_le<uint64_t>(d, 32 + 8);
    if (bytes > d.size() - 48) return fc;
    size_t at = 48, end = 48 + size_t(bytes);
    const auto take = [&](size_t n) { // false when the payload is too short
        if (n > end - at) return false;
        at += n;
        return true;
    };
    if (!take(24)) return fc;
    const int64_t n_layer = load_le<int32_t>(d, 48), H = load_le<int32_t>(d, 52), D = load_le<int64_t>(d, 56),
                  DV = load_le<int64_t>(d, 64);
    if (!take(4)) return fc;
    const int32_t n_tiers = load_le<int32_t>(d, 72);
    if (n_tiers < 1 || n_tiers > FST_CACHE_MAX_TIERS) return fc;
    std::vector<int64_t> capacity;
    for (int i = 0; i < n_tiers; ++i) {
        if (!take(16)) return fc;
        capacity.push_back(load_le<int64_t>(d, at - 12));
        const uint32_t len = load_le<uint32_t>(d, at - 4);
        if (len != UINT32_MAX) {
            if (!take(len)) return fc;
            fc.has_path = true;
            fc.path.assign(reinterpret_cast<const char *>(&d[at - len]), len);
        }
    }
    if (!take(24)) return fc;
    const int64_t n_keep = load_le<int64_t>(d, at - 24), max_tokens = load_le<int64_t>(d, at - 16),
                  chunk = load_le<int64_t>(d, at - 8);
    fc.parsed = true;
    // Tokens whose slots a load may allocate per layer: every ring, the n_keep region, the unbounded tier's first
    // blocks (max(256, migrate_chunk) doubling, for at most the rows in the file).
    const auto pos = [](int64_t v) { return double(std::max<int64_t>(v, 0)); };
    double tokens = pos(n_keep) + pos(max_tokens) + 2 * std::max(256.0, pos(chunk)) + double(d.size());
    for (int64_t c : capacity) tokens += pos(c);
    const double bytes_total = pos(n_layer) * (tokens * pos(H) * 4 * (pos(D) + pos(DV)) + 4 * std::max(pos(D), pos(DV)));
    fc.too_big = bytes_total > double(size_t(8) << 20); // 8 MiB of slots
    return fc;
}

} // namespace fuzz
