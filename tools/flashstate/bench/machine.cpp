#include "bench/machine.h"

#include <cmath>
#include <fstream>
#include <sys/resource.h>
#include <unistd.h>

namespace flashstate_tool::bench {

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            const size_t colon = line.find(':');
            return colon == std::string::npos ? line : line.substr(colon + 2);
        }
    return "unknown CPU";
}

double load_average() {
    std::ifstream in("/proc/loadavg");
    double load = -1;
    in >> load;
    return load;
}

CpuTimes cpu_times() {
    CpuTimes t;
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal && cpu == "cpu")
        t.machine = double(user + nice + system + irq + softirq + steal) / double(sysconf(_SC_CLK_TCK));
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    t.self = double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
             1e-6 * double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
    return t;
}

size_t reported_l3_bytes() {
#if defined(_SC_LEVEL3_CACHE_SIZE)
    const long s = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (s > 0) return size_t(s);
#endif
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index3/size");
    std::string text;
    if (!(in >> text) || text.empty()) return 0;
    size_t value = size_t(std::strtoull(text.c_str(), nullptr, 10));
    const char unit = text.back();
    if (unit == 'K') value <<= 10;
    if (unit == 'M') value <<= 20;
    if (unit == 'G') value <<= 30;
    return value;
}

size_t default_buffer_bytes(size_t l3) { return std::max(std::min(4 * l3, size_t(2048) * kMiB), size_t(1024) * kMiB); }

Limits measure_limits(const BigBuffer &buffer, size_t bytes, const std::vector<int> &thread_counts, bool quick) {
    Limits limits;
    limits.simd = peak::best_simd();
    limits.buffer_bytes = bytes;
    limits.passes = quick ? 3 : 7;
    for (int t : thread_counts) {
        Limit l;
        l.threads = t;
        const peak::Bandwidth bw = peak::best_read_bandwidth(buffer.data(), bytes, t, limits.passes, limits.simd);
        l.dram_gbs = bw.gbs;
        l.read_loop = bw.loop;
        l.fma_gflops = peak::fma_gflops(t, limits.passes, quick ? 0.02 : 0.2, limits.simd);
        limits.per_threads.push_back(l);
    }
    return limits;
}

void print_limits(const char *prefix, const Limits &limits) {
    std::printf("%s%-8s %15s %-15s %16s %14s\n", prefix, "threads", "DRAM read GB/s", " (read loop)", "F32 FMA GFLOP/s",
                "flop per byte");
    for (const Limit &l : limits.per_threads)
        std::printf("%s%-8d %15.2f  %-14s %16.1f %14.1f\n", prefix, l.threads, l.dram_gbs, peak::simd_name(l.read_loop),
                    l.fma_gflops, l.fma_gflops / l.dram_gbs);
}

Limits higher_limits(const Limits &a, const Limits &b) {
    Limits h = a;
    for (Limit &l : h.per_threads) {
        const Limit &m = b.at(l.threads);
        if (m.dram_gbs > l.dram_gbs) {
            l.dram_gbs = m.dram_gbs;
            l.read_loop = m.read_loop;
        }
        l.fma_gflops = std::max(l.fma_gflops, m.fma_gflops);
    }
    return h;
}

bool limits_moved(const Limits &a, const Limits &b) {
    auto moved = [](double x, double y) { return std::fabs(x - y) > 0.1 * std::max(x, y); };
    for (const Limit &l : a.per_threads) {
        const Limit &m = b.at(l.threads);
        if (moved(l.dram_gbs, m.dram_gbs) || moved(l.fma_gflops, m.fma_gflops)) return true;
    }
    return false;
}

} // namespace flashstate_tool::bench
