#include "cache/storage.h"

#include "common/error.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fst {

void FreeAligned::operator()(unsigned char *p) const noexcept { std::free(p); }

RamBlock allocate_ram(size_t bytes) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void *p = std::aligned_alloc(64, rounded > 0 ? rounded : 64);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, rounded); // deterministic bytes in unused slots (and in saved files)
    return RamBlock(static_cast<unsigned char *>(p));
}

namespace {
[[noreturn]] void fail_io(const std::string &what, const std::string &path, int err) {
    fail_message(what + " '" + path + "': " + std::strerror(err), FST_ERR_IO);
}
size_t page_size() {
    static const size_t size = size_t(sysconf(_SC_PAGESIZE));
    return size;
}
} // namespace

MappedFile::MappedFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail_io("cannot create the file-backed tier", path_, errno);
    // Truncating a file another live cache has mapped would crash that cache (SIGBUS): the lock says it is in use.
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        ::close(fd_);
        fd_ = -1;
        if (err == EWOULDBLOCK)
            fail_message("the file-backed tier '" + path_ + "' is in use by another live cache", FST_ERR_IO);
        fail_io("cannot lock the file-backed tier", path_, err);
    }
    if (::ftruncate(fd_, 0) != 0) {
        const int err = errno;
        ::close(fd_);
        fd_ = -1;
        fail_io("cannot truncate the file-backed tier", path_, err);
    }
}

MappedFile::~MappedFile() {
    for (auto &[p, n] : pieces_) ::munmap(p, n);
    if (fd_ >= 0) {
        // Delete the file unless something else was renamed over its path meanwhile (e.g. fst_cache_save to it).
        struct stat ours, now;
        if (::fstat(fd_, &ours) == 0 && ::stat(path_.c_str(), &now) == 0 && ours.st_dev == now.st_dev &&
            ours.st_ino == now.st_ino)
            ::unlink(path_.c_str());
        ::close(fd_);
    }
}

unsigned char *MappedFile::map(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t page = page_size();
    const size_t n = (bytes + page - 1) / page * page;
    const size_t offset = end_;
    int err = ::posix_fallocate(fd_, off_t(offset), off_t(n));
    if (err == EOPNOTSUPP || err == EINVAL) err = ::ftruncate(fd_, off_t(offset + n)) == 0 ? 0 : errno;
    if (err != 0) fail_io("cannot grow the file-backed tier", path_, err);
    void *p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, off_t(offset));
    if (p == MAP_FAILED) fail_io("cannot map the file-backed tier", path_, errno);
    pieces_.emplace_back(p, n);
    end_ = offset + n;
    return static_cast<unsigned char *>(p);
}

size_t MappedFile::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return end_;
}

} // namespace fst
