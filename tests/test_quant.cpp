// Storage conversions, bit for bit:
//   Q8_0 / Q4_0  fst_quantize_row writes exactly the bytes of ggml's reference quantizer (shared/golden/quant),
//                and fst_dequantize_row of ggml's bytes gives exactly ggml's floats (NaN and inf included);
//   F16 / BF16   round to nearest even on a sweep of values (ties, subnormals, overflow, inf, NaN), checked
//                against an independent nearest-value search, and decode every one of the 65536 patterns.
#include "reference/reference.h"
#include "support/npy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

const std::string kQuantDir = std::string(FLASHSTATE_GOLDEN_DIR) + "/quant";

uint32_t bits_of(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

float float_of(uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

std::vector<std::string> quant_inputs() {
    std::vector<std::string> bases;
    for (const auto &entry : std::filesystem::directory_iterator(kQuantDir)) {
        const std::string file = entry.path().filename().string();
        const std::string suffix = ".f32.npy";
        if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0)
            bases.push_back(file.substr(0, file.size() - suffix.size()));
    }
    std::sort(bases.begin(), bases.end());
    return bases;
}

// Dequantizes `bytes` with the library and compares with ggml's floats bit for bit. The reference decoder must
// agree too (by value; NaN by NaN-ness, since its NaN bits are whatever the double arithmetic made).
void expect_dequantizes_to(fst_type type, const std::vector<unsigned char> &bytes, const std::string &deq_path) {
    SCOPED_TRACE(deq_path);
    const std::vector<float> expected = fst_test::read_npy(deq_path).as_f32();
    const int64_t n = int64_t(expected.size());
    std::vector<float> got(expected.size(), -12345.0f);
    ASSERT_EQ(fst_dequantize_row(type, bytes.data(), got.data(), n), FST_OK) << fst_last_error();

    fst_tensor row{};
    row.type = type;
    row.ne[0] = n;
    row.ne[1] = row.ne[2] = row.ne[3] = 1;
    row.nb[0] = type == FST_TYPE_Q8_0 ? 34 : 18;
    row.nb[1] = row.nb[2] = row.nb[3] = bytes.size();
    row.data = const_cast<unsigned char *>(bytes.data());
    for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(bits_of(got[size_t(i)]), bits_of(expected[size_t(i)]))
            << "element " << i << ": library " << got[size_t(i)] << ", ggml " << expected[size_t(i)];
        const float decoded = float(ref::read(row, i));
        if (std::isnan(expected[size_t(i)]))
            EXPECT_TRUE(std::isnan(decoded)) << "reference decoder, element " << i;
        else
            EXPECT_EQ(bits_of(decoded), bits_of(expected[size_t(i)])) << "reference decoder, element " << i;
    }
}

TEST(Quant, Q8_0AndQ4_0BytesAndFloatsMatchGgml) {
    ASSERT_TRUE(std::filesystem::is_directory(kQuantDir)) << "golden quant directory missing: " << kQuantDir;
    const std::vector<std::string> bases = quant_inputs();
    ASSERT_FALSE(bases.empty()) << "no *.f32.npy input in " << kQuantDir;

    const struct {
        fst_type type;
        const char *name;
    } types[] = {{FST_TYPE_Q8_0, "q8_0"}, {FST_TYPE_Q4_0, "q4_0"}};
    for (const std::string &base : bases) {
        const std::vector<float> input = fst_test::read_npy(kQuantDir + "/" + base + ".f32.npy").as_f32();
        for (const auto &t : types) {
            const std::string prefix = kQuantDir + "/" + base + "." + t.name;
            SCOPED_TRACE(prefix);
            const fst_test::Npy ref_blocks = fst_test::read_npy(prefix + ".ref.npy");
            ASSERT_EQ(ref_blocks.descr, "|u1");

            // Quantize: exactly ggml's reference bytes.
            std::vector<unsigned char> got(ref_blocks.bytes.size(), 0xee);
            ASSERT_EQ(fst_quantize_row(t.type, input.data(), got.data(), int64_t(input.size())), FST_OK)
                << fst_last_error();
            const size_t block_bytes = t.type == FST_TYPE_Q8_0 ? 34 : 18;
            const auto first_diff = std::mismatch(got.begin(), got.end(), ref_blocks.bytes.begin());
            if (first_diff.first != got.end()) {
                const size_t at = size_t(first_diff.first - got.begin());
                ADD_FAILURE() << "first differing byte " << at << " (block " << at / block_bytes << ", byte "
                              << at % block_bytes << "): library 0x" << std::hex << int(*first_diff.first)
                              << ", ggml 0x" << int(*first_diff.second) << std::dec;
            }

            // Dequantize ggml's bytes (the reference quantizer's, and the CPU backend's where they exist).
            expect_dequantizes_to(t.type, ref_blocks.bytes, prefix + ".ref.deq.npy");
            if (std::filesystem::exists(prefix + ".cpu.npy")) {
                const fst_test::Npy cpu_blocks = fst_test::read_npy(prefix + ".cpu.npy");
                expect_dequantizes_to(t.type, cpu_blocks.bytes, prefix + ".cpu.deq.npy");
            }
        }
    }
}

TEST(Quant, BlockTypesRejectRowsThatAreNotWholeBlocks) {
    std::vector<float> src(33, 1.0f);
    std::vector<unsigned char> dst(2 * 34, 0);
    EXPECT_NE(fst_quantize_row(FST_TYPE_Q8_0, src.data(), dst.data(), 33), FST_OK);
    EXPECT_NE(fst_quantize_row(FST_TYPE_Q4_0, src.data(), dst.data(), 33), FST_OK);
    EXPECT_NE(fst_dequantize_row(FST_TYPE_Q8_0, dst.data(), src.data(), 33), FST_OK);
}

// ---- F16 and BF16 ----

// The 16-bit pattern nearest to x, ties to the even pattern, found by binary search over the positive patterns
// 0 .. inf_bits (their values increase with the pattern). Rounding treats inf_bits as the next power of two
// (`overflow`), as IEEE rounding does: x at or beyond the midpoint to it becomes inf.
uint16_t nearest_16bit(float x, double (*decode)(uint16_t), uint16_t inf_bits, double overflow) {
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(double(x));
    const auto value = [&](uint32_t b) { return b == inf_bits ? overflow : decode(uint16_t(b)); };
    if (a >= overflow) return uint16_t(sign | inf_bits);
    uint32_t lo = 0, hi = inf_bits; // value(lo) <= a < value(hi)
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        (value(mid) <= a ? lo : hi) = mid;
    }
    const double below = a - value(lo), above = value(hi) - a; // both exact in double
    const uint32_t nearest = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
    return uint16_t(sign | nearest);
}

// Values that exercise rounding: every representable value, every midpoint between neighbours (ties) and the
// floats just beside each midpoint, zeros, float subnormals, overflow, inf, NaN, and random bit patterns.
std::vector<float> rounding_sweep(double (*decode)(uint16_t), uint16_t inf_bits, double overflow) {
    std::vector<float> xs;
    for (uint32_t b = 0; b < inf_bits; ++b) {
        const double lo = decode(uint16_t(b)), hi = b + 1 == inf_bits ? overflow : decode(uint16_t(b + 1));
        const float mid = float((lo + hi) / 2); // exact: one more bit than the 16-bit format has
        for (float x : {float(lo), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
            xs.push_back(x);
            xs.push_back(-x);
        }
    }
    for (float x : {0.0f, -0.0f, FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MIN, 1e-30f, 1e10f, -1e10f, FLT_MAX, -FLT_MAX,
                    INFINITY, -INFINITY})
        xs.push_back(x);
    std::mt19937 rng(1234);
    for (int i = 0; i < 200000; ++i) {
        const float x = float_of(uint32_t(rng()));
        if (!std::isnan(x)) xs.push_back(x);
    }
    return xs;
}

bool is_nan_16(uint16_t b, uint16_t inf_bits) { return (b & inf_bits) == inf_bits && (b & ~0x8000 & ~inf_bits); }

void check_16bit_rounding(fst_type type, double (*decode)(uint16_t), uint16_t inf_bits, double overflow) {
    const std::vector<float> xs = rounding_sweep(decode, inf_bits, overflow);
    std::vector<uint16_t> got(xs.size(), 0);
    ASSERT_EQ(fst_quantize_row(type, xs.data(), got.data(), int64_t(xs.size())), FST_OK) << fst_last_error();
    int failures = 0;
    for (size_t i = 0; i < xs.size() && failures < 10; ++i) {
        const uint16_t expected = nearest_16bit(xs[i], decode, inf_bits, overflow);
        if (got[i] != expected) {
            ++failures;
            ADD_FAILURE() << fst_type_name(type) << " of " << xs[i] << " (bits 0x" << std::hex << bits_of(xs[i])
                          << "): library 0x" << got[i] << ", nearest-even 0x" << expected << std::dec;
        }
    }
    // NaN stays NaN (any payload).
    const float nans[] = {NAN, -NAN, float_of(0x7f800001), float_of(0xffc12345)};
    uint16_t nan_out[4] = {};
    ASSERT_EQ(fst_quantize_row(type, nans, nan_out, 4), FST_OK) << fst_last_error();
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(is_nan_16(nan_out[i], inf_bits)) << "NaN " << i << " -> 0x" << std::hex
                                                                               << nan_out[i];
}

void check_16bit_decoding(fst_type type, double (*decode)(uint16_t), uint16_t inf_bits) {
    std::vector<uint16_t> patterns(65536);
    for (uint32_t b = 0; b < 65536; ++b) patterns[b] = uint16_t(b);
    std::vector<float> got(65536, 0.0f);
    ASSERT_EQ(fst_dequantize_row(type, patterns.data(), got.data(), 65536), FST_OK) << fst_last_error();
    int failures = 0;
    for (uint32_t b = 0; b < 65536 && failures < 10; ++b) {
        const float expected = float(decode(uint16_t(b))); // every 16-bit value is exact in F32
        const bool ok = is_nan_16(uint16_t(b), inf_bits) ? std::isnan(got[b]) : bits_of(got[b]) == bits_of(expected);
        if (!ok) {
            ++failures;
            ADD_FAILURE() << fst_type_name(type) << " pattern 0x" << std::hex << b << ": library " << std::dec
                          << got[b] << ", expected " << expected;
        }
    }
    // And back: every non-NaN value round-trips to its own pattern (-0 included).
    std::vector<uint16_t> back(65536, 0);
    ASSERT_EQ(fst_quantize_row(type, got.data(), back.data(), 65536), FST_OK) << fst_last_error();
    failures = 0;
    for (uint32_t b = 0; b < 65536 && failures < 10; ++b)
        if (!is_nan_16(uint16_t(b), inf_bits) && back[b] != b) {
            ++failures;
            ADD_FAILURE() << fst_type_name(type) << " round trip of 0x" << std::hex << b << " gave 0x" << back[b];
        }
}

TEST(Quant, F16RoundsToNearestEven) {
    check_16bit_rounding(FST_TYPE_F16, ref::f16_to_double, 0x7c00, 65536.0);
}
TEST(Quant, F16DecodesEveryPattern) { check_16bit_decoding(FST_TYPE_F16, ref::f16_to_double, 0x7c00); }

TEST(Quant, BF16RoundsToNearestEven) {
    check_16bit_rounding(FST_TYPE_BF16, ref::bf16_to_double, 0x7f80, std::ldexp(1.0, 128));
}
TEST(Quant, BF16DecodesEveryPattern) { check_16bit_decoding(FST_TYPE_BF16, ref::bf16_to_double, 0x7f80); }

TEST(Quant, F32IsCopiedExactly) {
    const std::vector<float> xs = {0.0f, -0.0f, 1.0f, FLT_TRUE_MIN, -FLT_MAX, INFINITY, 0.1f, -3.25e-20f};
    std::vector<float> stored(xs.size()), back(xs.size());
    ASSERT_EQ(fst_quantize_row(FST_TYPE_F32, xs.data(), stored.data(), int64_t(xs.size())), FST_OK);
    ASSERT_EQ(fst_dequantize_row(FST_TYPE_F32, stored.data(), back.data(), int64_t(xs.size())), FST_OK);
    for (size_t i = 0; i < xs.size(); ++i) {
        EXPECT_EQ(bits_of(stored[i]), bits_of(xs[i])) << i;
        EXPECT_EQ(bits_of(back[i]), bits_of(xs[i])) << i;
    }
}

} // namespace
