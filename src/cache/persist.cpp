// The file: a 32-byte header, then 1 + n_layer sections (the config, then each layer), each checksummed.
//   header   "FSTCACHE" | u32 version | u32 header bytes (32) | u64 file bytes | u32 n_sections | u32 CRC-32 of
//            the 28 bytes before it
//   section  u32 kind (1 config, 2 layer) | u32 0 | u64 payload bytes | payload | u32 CRC-32 of all before it
// Numbers are little-endian. A layer's payload: i64 next_pos, the n_keep region, then each tier: i64 ring start,
// i64 tokens, and its rows oldest first, for each KV head the K rows then the V rows (exactly the stored bytes).
#include "cache/persist.h"

#include "cache/crc32.h"
#include "common/error.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

static_assert(std::endian::native == std::endian::little, "the cache file format is written as the host stores it");

namespace fst {

namespace {

constexpr char kMagic[8] = {'F', 'S', 'T', 'C', 'A', 'C', 'H', 'E'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 32;
constexpr uint32_t kConfigSection = 1, kLayerSection = 2;
constexpr size_t kSectionHead = 16, kSectionTail = 4;

[[noreturn]] void fail_io(const std::string &what, const std::string &path, int err) {
    fail_message(what + " '" + path + "': " + std::strerror(err), FST_ERR_IO);
}

// ---- writing ----

class Writer {
public:
    Writer(std::FILE *f, const std::string &path) : f_(f), path_(path) {}
    void bytes(const void *p, size_t n) {
        if (n == 0) return;
        crc_ = crc32_update(crc_, p, n);
        if (std::fwrite(p, 1, n, f_) != n) fail_io("cannot write", path_, errno);
    }
    template <class T> void put(T v) { bytes(&v, sizeof v); }
    void start_crc() { crc_ = 0; }
    uint32_t crc() const { return crc_; }

private:
    std::FILE *f_;
    const std::string &path_;
    uint32_t crc_ = 0;
};

size_t tier_rows_bytes(const Tier &t, int64_t n_head_kv) {
    return size_t(t.size()) * size_t(n_head_kv) * (t.row_bytes_k() + t.row_bytes_v());
}

void put_rows(Writer &w, const Tier &t, int64_t n_head_kv) {
    for (int64_t h = 0; h < n_head_kv; ++h) {
        for (int64_t i = 0; i < t.size(); ++i) w.bytes(t.k_row(i, h), t.row_bytes_k());
        for (int64_t i = 0; i < t.size(); ++i) w.bytes(t.v_row(i, h), t.row_bytes_v());
    }
}

std::vector<unsigned char> config_payload(const fst_cache_config &c) {
    std::vector<unsigned char> out;
    const auto append = [&](const void *p, size_t n) {
        const size_t at = out.size();
        out.resize(at + n);
        if (n > 0) std::memcpy(out.data() + at, p, n);
    };
    const auto put = [&](const auto v) { append(&v, sizeof v); };
    put(c.n_layer);
    put(c.n_head_kv);
    put(c.head_dim_k);
    put(c.head_dim_v);
    put(c.n_tiers);
    for (int i = 0; i < c.n_tiers; ++i) {
        put(int32_t(c.tiers[i].type));
        put(c.tiers[i].capacity);
        const uint32_t len = c.tiers[i].path ? uint32_t(std::strlen(c.tiers[i].path)) : UINT32_MAX;
        put(len);
        if (c.tiers[i].path) append(c.tiers[i].path, len);
    }
    put(c.n_keep);
    put(c.max_tokens);
    put(c.migrate_chunk);
    return out;
}

void write_file(const fst_cache &cache, std::FILE *f, const std::string &path) {
    const fst_cache_config &c = cache.config;
    const std::vector<unsigned char> config = config_payload(c);
    std::vector<size_t> layer_bytes;
    size_t total = kHeaderBytes + kSectionHead + config.size() + kSectionTail;
    for (const auto &L : cache.layers) {
        size_t n = 8 + 8 + (L->keep ? tier_rows_bytes(*L->keep, c.n_head_kv) : 0);
        for (const Tier &t : L->tiers) n += 16 + tier_rows_bytes(t, c.n_head_kv);
        layer_bytes.push_back(n);
        total += kSectionHead + n + kSectionTail;
    }

    Writer w(f, path);
    unsigned char header[kHeaderBytes] = {};
    std::memcpy(header, kMagic, 8);
    const uint32_t header_size = kHeaderBytes, n_sections = uint32_t(1 + cache.layers.size());
    const uint64_t file_bytes = total;
    std::memcpy(header + 8, &kVersion, 4);
    std::memcpy(header + 12, &header_size, 4);
    std::memcpy(header + 16, &file_bytes, 8);
    std::memcpy(header + 24, &n_sections, 4);
    const uint32_t header_crc = crc32_update(0, header, 28);
    std::memcpy(header + 28, &header_crc, 4);
    w.bytes(header, kHeaderBytes);

    const auto section_head = [&](uint32_t kind, uint64_t bytes) {
        w.start_crc();
        w.put(kind);
        w.put(uint32_t(0));
        w.put(bytes);
    };
    section_head(kConfigSection, config.size());
    w.bytes(config.data(), config.size());
    w.put(w.crc());
    for (size_t l = 0; l < cache.layers.size(); ++l) {
        const Layer &L = *cache.layers[l];
        section_head(kLayerSection, layer_bytes[l]);
        w.put(L.next_pos);
        w.put(L.n_kept());
        if (L.keep) put_rows(w, *L.keep, c.n_head_kv);
        for (const Tier &t : L.tiers) {
            w.put(t.start());
            w.put(t.size());
            put_rows(w, t, c.n_head_kv);
        }
        w.put(w.crc());
    }
}

// ---- reading ----

[[noreturn]] void corrupt(const std::string &path, const std::string &what) {
    fail_message("'" + path + "' is not a valid flashstate cache file: " + what, FST_ERR_CORRUPT);
}

// Bounds-checked reads from one section's payload.
class Reader {
public:
    Reader(const unsigned char *p, size_t n, const std::string &path, std::string where)
        : p_(p), n_(n), path_(path), where_(std::move(where)) {}
    const unsigned char *bytes(size_t n, const char *what) {
        if (n > n_ - off_)
            corrupt(path_, where_ + ": " + what + " needs " + std::to_string(n) + " bytes, " +
                               std::to_string(n_ - off_) + " left");
        const unsigned char *p = p_ + off_;
        off_ += n;
        return p;
    }
    template <class T> T get(const char *what) {
        T v;
        std::memcpy(&v, bytes(sizeof v, what), sizeof v);
        return v;
    }
    void expect_end() {
        if (off_ != n_) corrupt(path_, where_ + ": " + std::to_string(n_ - off_) + " bytes left over");
    }
    size_t remaining() const { return n_ - off_; }
    [[noreturn]] void bad(const std::string &what) { corrupt(path_, where_ + ": " + what); }

private:
    const unsigned char *p_;
    size_t n_, off_ = 0;
    const std::string &path_;
    std::string where_;
};

std::vector<unsigned char> read_whole_file(const std::string &path) {
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) fail_io("cannot open", path, errno);
    std::vector<unsigned char> data;
    unsigned char buffer[1 << 16];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) data.insert(data.end(), buffer, buffer + n);
    const int err = std::ferror(f) ? errno : 0;
    std::fclose(f);
    if (err != 0) fail_io("cannot read", path, err);
    return data;
}

struct Section {
    uint32_t kind;
    const unsigned char *payload;
    size_t bytes;
};

// The header and every section's bounds and checksum, before anything is interpreted.
std::vector<Section> check_sections(const std::vector<unsigned char> &data, const std::string &path) {
    if (data.size() < kHeaderBytes)
        corrupt(path, "it is " + std::to_string(data.size()) + " bytes, shorter than the " +
                          std::to_string(kHeaderBytes) + "-byte header (truncated?)");
    if (std::memcmp(data.data(), kMagic, 8) != 0) corrupt(path, "it does not start with \"FSTCACHE\"");
    uint32_t version, header_size, n_sections, header_crc;
    uint64_t file_bytes;
    std::memcpy(&version, &data[8], 4);
    std::memcpy(&header_size, &data[12], 4);
    std::memcpy(&file_bytes, &data[16], 8);
    std::memcpy(&n_sections, &data[24], 4);
    std::memcpy(&header_crc, &data[28], 4);
    if (crc32_update(0, data.data(), 28) != header_crc) corrupt(path, "header checksum mismatch");
    if (version != kVersion)
        fail_message("'" + path + "' is a flashstate cache file of format version " + std::to_string(version) +
                         ", this library reads version " + std::to_string(kVersion),
                     FST_ERR_UNSUPPORTED);
    if (header_size != kHeaderBytes) corrupt(path, "header size " + std::to_string(header_size) + ", expected 32");
    if (file_bytes != data.size())
        corrupt(path, "it is " + std::to_string(data.size()) + " bytes, its header says " +
                          std::to_string(file_bytes) + " (truncated or extended)");
    std::vector<Section> sections;
    size_t off = kHeaderBytes;
    for (uint32_t s = 0; s < n_sections; ++s) {
        const std::string where = "section " + std::to_string(s);
        if (data.size() - off < kSectionHead + kSectionTail) corrupt(path, where + " is cut off");
        Section sec;
        uint64_t bytes;
        std::memcpy(&sec.kind, &data[off], 4);
        std::memcpy(&bytes, &data[off + 8], 8);
        if (bytes > data.size() - off - kSectionHead - kSectionTail)
            corrupt(path, where + " claims " + std::to_string(bytes) + " bytes, more than the file holds");
        sec.payload = &data[off + kSectionHead];
        sec.bytes = size_t(bytes);
        const size_t end = off + kSectionHead + sec.bytes;
        uint32_t crc;
        std::memcpy(&crc, &data[end], 4);
        if (crc32_update(0, &data[off], end - off) != crc) corrupt(path, where + " checksum mismatch");
        sections.push_back(sec);
        off = end + kSectionTail;
    }
    if (off != data.size()) corrupt(path, std::to_string(data.size() - off) + " bytes after the last section");
    if (sections.empty() || sections[0].kind != kConfigSection) corrupt(path, "the first section is not the config");
    for (size_t s = 1; s < sections.size(); ++s)
        if (sections[s].kind != kLayerSection) corrupt(path, "section " + std::to_string(s) + " is not a layer");
    return sections;
}

// The config; saved_path receives the file-backed tier's path, which the config's pointer then refers to.
fst_cache_config read_config(Reader &r, std::string &saved_path) {
    fst_cache_config c{};
    c.n_layer = r.get<int32_t>("n_layer");
    c.n_head_kv = r.get<int32_t>("n_head_kv");
    c.head_dim_k = r.get<int64_t>("head_dim_k");
    c.head_dim_v = r.get<int64_t>("head_dim_v");
    c.n_tiers = r.get<int32_t>("n_tiers");
    if (c.n_tiers < 1 || c.n_tiers > FST_CACHE_MAX_TIERS) r.bad("n_tiers = " + std::to_string(c.n_tiers));
    for (int i = 0; i < c.n_tiers; ++i) {
        const int32_t type = r.get<int32_t>("tier type");
        std::memcpy(&c.tiers[i].type, &type, sizeof type);
        c.tiers[i].capacity = r.get<int64_t>("tier capacity");
        const uint32_t len = r.get<uint32_t>("tier path length");
        if (len != UINT32_MAX) {
            const unsigned char *p = r.bytes(len, "tier path");
            saved_path.assign(reinterpret_cast<const char *>(p), len);
            if (saved_path.find('\0') != std::string::npos) r.bad("a tier path holds a NUL byte");
            c.tiers[i].path = saved_path.c_str();
        }
    }
    c.n_keep = r.get<int64_t>("n_keep");
    c.max_tokens = r.get<int64_t>("max_tokens");
    c.migrate_chunk = r.get<int64_t>("migrate_chunk");
    r.expect_end();
    return c;
}

void get_rows(Reader &r, Tier &t, int64_t n_head_kv) {
    for (int64_t h = 0; h < n_head_kv; ++h) {
        for (int64_t i = 0; i < t.size(); ++i) std::memcpy(t.k_row(i, h), r.bytes(t.row_bytes_k(), "K rows"), t.row_bytes_k());
        for (int64_t i = 0; i < t.size(); ++i) std::memcpy(t.v_row(i, h), r.bytes(t.row_bytes_v(), "V rows"), t.row_bytes_v());
    }
}

// Restores one tier's ring start and count after checking them; the rows follow.
void restore_tier(Reader &r, Tier &t, int64_t start, int64_t n, int64_t n_head_kv, const std::string &name) {
    if (n < 0 || (t.bounded() && n > t.capacity()))
        r.bad(name + " holds " + std::to_string(n) + " tokens, capacity " + std::to_string(t.capacity()));
    if (t.bounded() ? (start < 0 || start >= t.capacity()) : start != 0)
        r.bad(name + " starts at slot " + std::to_string(start));
    // The rows must be in the payload; checked before reserving, so a forged count allocates nothing.
    const size_t row = (t.row_bytes_k() + t.row_bytes_v()) * size_t(n_head_kv);
    if (size_t(n) > r.remaining() / row)
        r.bad(name + " holds " + std::to_string(n) + " tokens, the section has rows for at most " +
              std::to_string(r.remaining() / row));
    t.reserve(n);
    t.restore(start, n);
}

void read_layer(Reader &r, const fst_cache_config &c, Layer &L) {
    L.next_pos = r.get<int64_t>("next_pos");
    const int64_t n_kept = r.get<int64_t>("n_kept");
    if (n_kept < 0 || n_kept > c.n_keep) r.bad("n_kept = " + std::to_string(n_kept) + ", n_keep = " + std::to_string(c.n_keep));
    if (L.keep) {
        restore_tier(r, *L.keep, 0, n_kept, c.n_head_kv, "the n_keep region");
        get_rows(r, *L.keep, c.n_head_kv);
    }
    int64_t held = n_kept;
    for (size_t i = 0; i < L.tiers.size(); ++i) {
        const int64_t start = r.get<int64_t>("tier start");
        const int64_t n = r.get<int64_t>("tier tokens");
        const std::string name = "tier " + std::to_string(i);
        if (n > 0 && n_kept < c.n_keep) r.bad(name + " holds tokens while the n_keep region is not full");
        restore_tier(r, L.tiers[i], start, n, c.n_head_kv, name);
        get_rows(r, L.tiers[i], c.n_head_kv);
        held += n;
    }
    r.expect_end();
    if (L.next_pos < held || L.next_pos > (int64_t(1) << 60) || (c.max_tokens == 0 && L.next_pos != held))
        r.bad("next_pos = " + std::to_string(L.next_pos) + " with " + std::to_string(held) + " tokens held");
    if (c.max_tokens > 0 && held > c.max_tokens)
        r.bad(std::to_string(held) + " tokens held, max_tokens = " + std::to_string(c.max_tokens));
}

} // namespace

void save_cache(const fst_cache &cache, const char *path_c) {
    const std::string path = path_c;
    std::vector<std::shared_lock<LayerLock>> locks;
    for (const auto &L : cache.layers) locks.emplace_back(L->mutex);

    std::string tmp = path + ".tmp-XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) fail_io("cannot create a temporary file next to", path, errno);
    std::FILE *f = ::fdopen(fd, "wb");
    if (!f) {
        const int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        fail_io("cannot open", tmp, err);
    }
    try {
        write_file(cache, f, tmp);
        if (std::fflush(f) != 0) fail_io("cannot write", tmp, errno);
        if (::fsync(fd) != 0) fail_io("cannot fsync", tmp, errno);
    } catch (...) {
        std::fclose(f);
        ::unlink(tmp.c_str());
        throw;
    }
    if (std::fclose(f) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        fail_io("cannot close", tmp, err);
    }
    ::chmod(tmp.c_str(), 0644); // mkstemp makes 0600
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        fail_io("cannot rename the temporary file to", path, err);
    }
    const size_t slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) fail_io("cannot open the directory of", path, errno);
    const int sync_result = ::fsync(dir_fd);
    const int err = errno;
    ::close(dir_fd);
    if (sync_result != 0) fail_io("cannot fsync the directory of", path, err);
}

std::unique_ptr<fst_cache> load_cache(const char *path_c, const char *file_tier_path) {
    const std::string path = path_c;
    const std::vector<unsigned char> data = read_whole_file(path);
    const std::vector<Section> sections = check_sections(data, path);

    Reader config_reader(sections[0].payload, sections[0].bytes, path, "config");
    std::string saved_path;
    const fst_cache_config c = read_config(config_reader, saved_path);
    try {
        validate_config(c, FST_ERR_CORRUPT);
    } catch (const Error &e) {
        corrupt(path, std::string("config: ") + e.what());
    }
    if (sections.size() != size_t(c.n_layer) + 1)
        corrupt(path, std::to_string(sections.size() - 1) + " layer sections, config.n_layer = " + std::to_string(c.n_layer));

    const bool has_file_tier = c.tiers[c.n_tiers - 1].path != nullptr;
    auto cache = make_cache(c, has_file_tier ? (file_tier_path ? file_tier_path : saved_path) : std::string());
    for (size_t l = 0; l < cache->layers.size(); ++l) {
        Reader r(sections[l + 1].payload, sections[l + 1].bytes, path, "layer " + std::to_string(l));
        read_layer(r, cache->config, *cache->layers[l]);
    }
    return cache;
}

} // namespace fst
