// Machine limits for the roofline of `flashstate bench`: DRAM read bandwidth and F32 FMA throughput, measured by
// simple loops that do nothing but stream loads or chain FMAs, on 1..n threads started together.
#pragma once

#include <cstddef>
#include <cstdint>

namespace flashstate_tool::peak {

// The widest vector level this CPU runs (and this build has loops for). Chosen at run time, never by compiler flags.
enum class Simd { sse, avx2, avx512 };
Simd best_simd();
const char *simd_name(Simd s); // "sse", "avx2+fma", "avx512f"

// Median bandwidth in GB/s (1e9 bytes/s) of `passes` timed reads of buffer[0, bytes) split into `threads`
// contiguous slices, one per thread, after one untimed pass. The buffer must already be written (faulted in).
double read_bandwidth_gbs(const unsigned char *buffer, size_t bytes, int threads, int passes, Simd simd);

// The best of read_bandwidth_gbs over every read loop up to `best` (the widest loads are not always the fastest
// stream: on the Xeon of docs/PERFORMANCE.md the AVX-512 loop reads ~15 % slower than the AVX2 one), and which.
struct Bandwidth {
    double gbs = 0;
    Simd loop = Simd::sse;
};
Bandwidth best_read_bandwidth(const unsigned char *buffer, size_t bytes, int threads, int passes, Simd best);

// Median F32 FMA throughput in GFLOP/s (2 flops per lane per FMA) of `passes` runs in which every one of `threads`
// threads chains FMAs for about `seconds_per_pass`.
double fma_gflops(int threads, int passes, double seconds_per_pass, Simd simd);

// The per-ISA loops (peak/fma_avx512.cpp, peak/fma_avx2.cpp and the SSE/plain fallback in peak.cpp).
// fma_*: `iterations` steps of 12 independent FMA chains; returns a value that depends on every chain so that
// the work cannot be removed. read_*: XOR of every 64-bit word of data[0, bytes), bytes a multiple of 8.
float fma_avx512(int64_t iterations);
float fma_avx2(int64_t iterations);
float fma_sse(int64_t iterations);
uint64_t read_avx512(const unsigned char *data, size_t bytes);
uint64_t read_avx2(const unsigned char *data, size_t bytes);
uint64_t read_plain(const unsigned char *data, size_t bytes);

// Flops of one iteration of the fma_* loop of a level: 12 chains x lanes x 2.
double flops_per_iteration(Simd s);

} // namespace flashstate_tool::peak
