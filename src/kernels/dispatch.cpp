// Reads the CPU's features once and picks a kernel table. FLASHSTATE_ISA=portable|avx2|avx512 lowers the choice.
#include "kernels/kernel.h"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>

namespace fst::kernels {

namespace {

fst_isa isa_from_env() {
    const char *e = std::getenv("FLASHSTATE_ISA");
    if (e == nullptr || *e == '\0') return FST_ISA_AUTO;
    if (std::strcmp(e, "portable") == 0) return FST_ISA_PORTABLE;
    if (std::strcmp(e, "avx2") == 0) return FST_ISA_AVX2;
    if (std::strcmp(e, "avx512") == 0) return FST_ISA_AVX512;
    return FST_ISA_AUTO; // an unknown value changes nothing
}

// F16C is CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does not know "f16c").
bool cpu_has_f16c() {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

// The best level this CPU (and its OS, which __builtin_cpu_supports also checks) supports.
fst_isa cpu_isa() {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return FST_ISA_AVX512;
    return avx2 ? FST_ISA_AVX2 : FST_ISA_PORTABLE;
}

const KernelTable &table_for(fst_isa isa) {
    switch (isa) {
    case FST_ISA_AVX512: return avx512_kernels();
    case FST_ISA_AVX2: return avx2_kernels();
    case FST_ISA_AUTO: case FST_ISA_PORTABLE: break;
    }
    return portable_kernels();
}

fst_isa lower(fst_isa a, fst_isa b) {
    if (a == FST_ISA_AUTO) return b;
    if (b == FST_ISA_AUTO) return a;
    return a < b ? a : b;
}

bool cpu_is_amd() {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    char vendor[12];
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    return std::memcmp(vendor, "AuthenticAMD", 12) == 0;
}

} // namespace

// Measured with decode from DRAM (docs/PERFORMANCE.md): on the Intel Xeon, 12 keys ahead into L2 was the best of
// 8-32 keys and the T0/T1/T2 hints; on an AMD Zen 5, prefetcht2 left the core waiting and 32 keys (8 KiB of F16)
// into L1 decoded F16 ~7 % faster (1 and 2 threads, alternating runs); quantized rows 32 keys ahead instead of 16
// decoded Q4_0 3-7 % faster and Q8_0 ~3 % (2 threads, 3 alternated bench runs and 7 scratch rounds).
const PrefetchTuning &prefetch_tuning() {
    static const PrefetchTuning tuning = [] {
        PrefetchTuning t;
        if (cpu_is_amd()) {
            t.keys_wide = 32;
            t.keys_quantized = 32;
            t.to_l1 = true;
        }
        return t;
    }();
    return tuning;
}

fst_isa best_isa() {
    static const fst_isa best = lower(isa_from_env(), cpu_isa());
    return best;
}

const KernelTable &select_kernels(fst_isa requested) { return table_for(lower(requested, best_isa())); }

} // namespace fst::kernels

extern "C" fst_isa fst_isa_best(void) { return fst::kernels::best_isa(); }

extern "C" const char *fst_isa_name(fst_isa isa) {
    switch (isa) {
    case FST_ISA_AUTO: return "auto";
    case FST_ISA_PORTABLE: return "portable";
    case FST_ISA_AVX2: return "avx2";
    case FST_ISA_AVX512: return "avx512";
    }
    return "unknown";
}
