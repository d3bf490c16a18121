// The harness of the machine-limit loops: run-time choice of the vector level, threads started together, medians.
// The baseline loops live here (plain C++, built for the compiler's default target); the AVX2 and AVX-512 loops
// live in their own files, the only ones compiled with ISA flags.
#include "peak.h"

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <chrono>
#include <thread>
#include <vector>

namespace flashstate_tool::peak {

namespace {

// Keeps results of the loops alive so that the compiler cannot drop them.
std::atomic<uint64_t> g_sink{0};

// Runs work(i) for i in [0, threads) on that many threads, released together; returns the wall time in seconds
// from the release to the end of the slowest. The calling thread is worker 0.
template <class Work> double run_together(int threads, Work work) {
    std::atomic<bool> go{false};
    std::vector<std::thread> others;
    for (int i = 1; i < threads; ++i)
        others.emplace_back([&go, &work, i] {
            while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
            work(i);
        });
    // Give the other threads time to reach the spin before the clock starts.
    std::this_thread::sleep_for(std::chrono::milliseconds(threads > 1 ? 2 : 0));
    const auto start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    work(0);
    for (std::thread &t : others) t.join();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

float fma_loop(Simd s, int64_t iterations) {
#if defined(FLASHSTATE_PEAK_X86)
    if (s == Simd::avx512) return fma_avx512(iterations);
    if (s == Simd::avx2) return fma_avx2(iterations);
#endif
    (void)s;
    return fma_sse(iterations);
}

uint64_t read_loop(Simd s, const unsigned char *data, size_t bytes) {
#if defined(FLASHSTATE_PEAK_X86)
    if (s == Simd::avx512) return read_avx512(data, bytes);
    if (s == Simd::avx2) return read_avx2(data, bytes);
#endif
    (void)s;
    return read_plain(data, bytes);
}

} // namespace

Simd best_simd() {
#if defined(FLASHSTATE_PEAK_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Simd::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::avx2;
#endif
    return Simd::sse;
}

const char *simd_name(Simd s) {
    switch (s) {
    case Simd::avx512: return "avx512f";
    case Simd::avx2: return "avx2+fma";
    case Simd::sse: break;
    }
#if defined(FLASHSTATE_PEAK_X86)
    return "sse2 (mul+add)";
#else
    return "plain C++ (mul+add)";
#endif
}

double flops_per_iteration(Simd s) {
    const double lanes = s == Simd::avx512 ? 16 : s == Simd::avx2 ? 8 : 4;
    return 12 * lanes * 2;
}

// The baseline has no FMA: a multiply and an add per lane count as the same 2 flops. 12 chains of 4 lanes (GCC/Clang
// vector extension: SSE registers without ISA flags), with distinct values so that the compiler cannot merge them.
float fma_sse(int64_t iterations) {
    typedef float F4 __attribute__((vector_size(16)));
    const F4 m = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, c = {1e-6f, 1e-6f, 1e-6f, 1e-6f};
    F4 a[12];
    for (int i = 0; i < 12; ++i) a[i] = F4{1.0f, 1.1f, 1.2f, 1.3f} + 0.01f * float(i);
    F4 a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
    F4 a6 = a[6], a7 = a[7], a8 = a[8], a9 = a[9], a10 = a[10], a11 = a[11];
    for (int64_t i = 0; i < iterations; ++i) {
        a0 = a0 * m + c;
        a1 = a1 * m + c;
        a2 = a2 * m + c;
        a3 = a3 * m + c;
        a4 = a4 * m + c;
        a5 = a5 * m + c;
        a6 = a6 * m + c;
        a7 = a7 * m + c;
        a8 = a8 * m + c;
        a9 = a9 * m + c;
        a10 = a10 * m + c;
        a11 = a11 * m + c;
    }
    const F4 s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
    return s[0] + s[1] + s[2] + s[3];
}

uint64_t read_plain(const unsigned char *data, size_t bytes) {
    uint64_t x[4] = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 32 <= bytes; i += 32)
        for (int j = 0; j < 4; ++j) {
            uint64_t w;
            __builtin_memcpy(&w, data + i + 8 * j, 8);
            x[j] ^= w;
        }
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        __builtin_memcpy(&w, data + i, 8);
        x[0] ^= w;
    }
    return x[0] ^ x[1] ^ x[2] ^ x[3];
}

double read_bandwidth_gbs(const unsigned char *buffer, size_t bytes, int threads, int passes, Simd simd) {
    // Slices start on 4 KiB boundaries so no two threads share a page.
    const size_t slice = (bytes / size_t(threads)) & ~size_t(4095);
    const size_t total = slice * size_t(threads);
    auto pass = [&](int i) { g_sink ^= read_loop(simd, buffer + size_t(i) * slice, slice); };
    run_together(threads, pass); // untimed: page tables and frequency settle
    std::vector<double> gbs;
    for (int p = 0; p < passes; ++p) gbs.push_back(double(total) / run_together(threads, pass) / 1e9);
    return median(gbs);
}

Bandwidth best_read_bandwidth(const unsigned char *buffer, size_t bytes, int threads, int passes, Simd best) {
    Bandwidth result;
    for (Simd s : {Simd::sse, Simd::avx2, Simd::avx512}) {
        if (s > best) break;
        const double gbs = read_bandwidth_gbs(buffer, bytes, threads, passes, s);
        if (gbs > result.gbs) result = {gbs, s};
    }
    return result;
}

double fma_gflops(int threads, int passes, double seconds_per_pass, Simd simd) {
    // Calibrate the iteration count on one thread, then time `passes` runs on all threads together.
    int64_t iterations = 1 << 16;
    for (;;) {
        const double t = run_together(1, [&](int) { g_sink += uint64_t(fma_loop(simd, iterations)); });
        if (t >= seconds_per_pass / 4 || iterations > (int64_t(1) << 40)) {
            iterations = std::max<int64_t>(1, int64_t(double(iterations) * seconds_per_pass / t));
            break;
        }
        iterations *= 4;
    }
    const double flops = double(iterations) * flops_per_iteration(simd) * threads;
    std::vector<double> gflops;
    for (int p = 0; p < passes; ++p) {
        const double t = run_together(threads, [&](int) { g_sink += uint64_t(fma_loop(simd, iterations)); });
        gflops.push_back(flops / t / 1e9);
    }
    return median(gflops);
}

} // namespace flashstate_tool::peak
