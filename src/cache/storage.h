// Where a tier's bytes live: aligned RAM blocks, or pieces of one memory-mapped file shared by a cache's layers.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace fst {

// 64-byte aligned RAM, freed with the owner. Throws std::bad_alloc.
struct FreeAligned {
    void operator()(unsigned char *p) const noexcept;
};
using RamBlock = std::unique_ptr<unsigned char, FreeAligned>;
RamBlock allocate_ram(size_t bytes);

// The file behind a file-backed tier: created (or truncated) at construction, grown one mapped piece at a time,
// and deleted when the cache is freed (it is scratch storage for the live cache; fst_cache_save makes a file that
// lasts). Pieces are never moved or unmapped before the destructor, so views into them stay valid while other
// layers grow the file. Disk space is reserved (posix_fallocate) before mapping, so a full disk is an FST_ERR_IO
// from the append that needed it, not a SIGBUS later.
class MappedFile {
public:
    explicit MappedFile(std::string path); // throws fst::Error FST_ERR_IO naming the path and the system's reason
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;

    // A new zero-filled piece of at least `bytes` bytes at the end of the file, page-aligned. Thread-safe.
    unsigned char *map(size_t bytes);
    const std::string &path() const { return path_; }
    size_t size() const; // bytes the file holds now

private:
    std::string path_;
    int fd_ = -1;
    mutable std::mutex mutex_;
    size_t end_ = 0;
    std::vector<std::pair<void *, size_t>> pieces_;
};

} // namespace fst
