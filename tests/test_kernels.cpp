// The kernels' building blocks that the attention tests cannot isolate: the vectorized e^x of every ISA this CPU
// has, against double-precision exp. Its maximum error is the figure the kernel headers document.
#include "kernels/kernel.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

struct Level {
    fst_isa isa;
    const fst::kernels::KernelTable *table;
};

std::vector<Level> levels_of_this_cpu() {
    std::vector<Level> out;
    for (int level = FST_ISA_PORTABLE; level <= FST_ISA_AVX512; ++level) {
        const auto &t = fst::kernels::select_kernels(fst_isa(level));
        if (t.isa == fst_isa(level)) out.push_back({fst_isa(level), &t});
    }
    return out;
}

// Documented bound: 1 ulp of float (2^-23 relative) over the range the kernels use, e^x for x in [-87, 10]
// (measured on an AVX-512 Xeon: 0.60 ulp for the AVX2 and AVX-512 versions, 0.50 for libm).
constexpr double kMaxRelError = 1.0 / 8388608.0;

TEST(KernelExp, RelativeErrorOverTheUsedRangeIsWithinOneUlp) {
    std::vector<float> x, y;
    for (double v = -87.0; v <= 10.0; v += 1.0 / 4096.0) x.push_back(float(v));
    y.resize(x.size());
    for (const Level &l : levels_of_this_cpu()) {
        l.table->exp_array(x.data(), y.data(), int64_t(x.size()));
        double worst = 0.0, at = 0.0;
        for (size_t i = 0; i < x.size(); ++i) {
            const double want = std::exp(double(x[i]));
            const double err = std::fabs(double(y[i]) - want) / want;
            if (err > worst) worst = err, at = x[i];
        }
        std::printf("exp %-8s max relative error %.3g (%.2f ulp) at x = %.6f\n", fst_isa_name(l.isa), worst,
                    worst * 8388608.0, at);
        EXPECT_LE(worst, kMaxRelError) << fst_isa_name(l.isa);
    }
}

TEST(KernelExp, EdgesAreExact) {
    const float inf = INFINITY;
    std::vector<float> x = {-inf, -200.0f, -104.0f, 0.0f, NAN}, y(x.size());
    for (const Level &l : levels_of_this_cpu()) {
        l.table->exp_array(x.data(), y.data(), int64_t(x.size()));
        EXPECT_EQ(y[0], 0.0f) << fst_isa_name(l.isa) << ": e^-inf";
        EXPECT_EQ(y[1], 0.0f) << fst_isa_name(l.isa) << ": e^-200 underflows to 0";
        EXPECT_LT(y[2], 1e-37f) << fst_isa_name(l.isa);
        EXPECT_EQ(y[3], 1.0f) << fst_isa_name(l.isa) << ": e^0";
        EXPECT_TRUE(std::isnan(y[4])) << fst_isa_name(l.isa) << ": NaN in, NaN out";
    }
}

TEST(KernelDispatch, ForcingALowerLevelIsHonoured) {
    EXPECT_EQ(fst::kernels::select_kernels(FST_ISA_PORTABLE).isa, FST_ISA_PORTABLE);
    const fst_isa best = fst_isa_best();
    EXPECT_LE(int(fst::kernels::select_kernels(FST_ISA_AVX512).isa), int(best));
    EXPECT_EQ(fst::kernels::select_kernels(FST_ISA_AUTO).isa, best);
}

} // namespace
