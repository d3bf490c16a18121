// `flashstate bench`: the host it runs on (CPU model, load, CPU time taken by others, L3 size), the arena its
// buffers live in, and the machine limits it judges the cases against: DRAM read bandwidth and F32 FMA peak, measured
// again after the cases and sampled between them.
#pragma once

#include "peak/peak.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace flashstate_tool::bench {

constexpr size_t kMiB = size_t(1) << 20;

// The CPU's model name from /proc/cpuinfo.
std::string cpu_model();

// The 1-minute load average (-1 if unknown): other processes on the machine show up in every number here.
double load_average();

// CPU seconds used so far by every process on the machine (busy and stolen time in /proc/stat) and by this one
// (getrusage): their difference over a run is what other processes, or the hypervisor, took from it.
struct CpuTimes {
    double machine = -1, self = 0;
};

CpuTimes cpu_times();

// The L3 size the system reports (0 if unknown): sysconf first, then sysfs ("491520K").
size_t reported_l3_bytes();

// max(4 x reported L3 capped at 2 GiB, 1 GiB): some virtual machines report an L3 several times the effective one
// (this Xeon reports 480 MiB and behaves like ~100-128 MiB), so the buffer is never below 1 GiB.
size_t default_buffer_bytes(size_t l3);

// One large page-aligned allocation, asked for transparent huge pages (fewer TLB misses for the bandwidth loop and
// the kernels alike).
class BigBuffer {
public:
    explicit BigBuffer(size_t bytes) : bytes_((bytes + kAlign - 1) / kAlign * kAlign) {
        data_ = static_cast<unsigned char *>(std::aligned_alloc(kAlign, bytes_));
        if (data_ == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        madvise(data_, bytes_, MADV_HUGEPAGE);
#endif
    }
    ~BigBuffer() { std::free(data_); }
    BigBuffer(const BigBuffer &) = delete;
    BigBuffer &operator=(const BigBuffer &) = delete;
    unsigned char *data() const { return data_; }
    size_t size() const { return bytes_; }

private:
    static constexpr size_t kAlign = 2 * kMiB;
    size_t bytes_;
    unsigned char *data_ = nullptr;
};

struct Limit {
    int threads = 0;
    double dram_gbs = 0, fma_gflops = 0;
    peak::Simd read_loop = peak::Simd::sse; // the read loop that streamed fastest
};

struct Limits {
    peak::Simd simd = peak::Simd::sse;
    size_t buffer_bytes = 0;
    int passes = 0;
    std::vector<Limit> per_threads;

    const Limit &at(int threads) const {
        for (const Limit &l : per_threads)
            if (l.threads == threads) return l;
        return per_threads.back();
    }
};

// DRAM read bandwidth (the fastest read loop over `bytes` of the buffer) and the F32 FMA peak at each thread count.
Limits measure_limits(const BigBuffer &buffer, size_t bytes, const std::vector<int> &thread_counts, bool quick);

// The limits as a table, each line starting with prefix.
void print_limits(const char *prefix, const Limits &limits);

// Per thread count, the higher DRAM rate and the higher FMA peak of two measurements: what the machine showed it
// can do in this run. A limit read in a slow minute would flatter every fraction measured against it.
Limits higher_limits(const Limits &a, const Limits &b);

// DRAM read rates sampled between the cases (a short read after each one, at its thread count, with the read loop
// the first measurement chose). The guest's DRAM rate drifts by tens of percent between minutes; a run whose two
// full measurements both fell in slow minutes would judge every case against a limit that flatters it.
struct DramSamples {
    struct Range {
        int threads = 0, n = 0;
        double min_gbs = 0, max_gbs = 0;
    };
    std::vector<Range> ranges;

    void add(int threads, double gbs) {
        for (Range &r : ranges)
            if (r.threads == threads) {
                r.min_gbs = std::min(r.min_gbs, gbs);
                r.max_gbs = std::max(r.max_gbs, gbs);
                ++r.n;
                return;
            }
        ranges.push_back({threads, 1, gbs, gbs});
    }
    // Raises each thread count's DRAM rate in `limits` to the fastest sample: what the machine showed it can do.
    void raise(Limits &limits) const {
        for (Limit &l : limits.per_threads)
            for (const Range &r : ranges)
                if (r.threads == l.threads) l.dram_gbs = std::max(l.dram_gbs, r.max_gbs);
    }
};

// Whether a DRAM rate or FMA peak differs by more than 10 % between two measurements.
bool limits_moved(const Limits &a, const Limits &b);

} // namespace flashstate_tool::bench
