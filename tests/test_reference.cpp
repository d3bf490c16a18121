// Checks the double-precision oracle itself against values computed by hand, so that every other test's
// expected values rest on something verified. Uses no library function: tensors are built here byte by byte.
#include "reference/reference.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

const double kInf = std::numeric_limits<double>::infinity();

// An owning contiguous tensor. bytes_per_block is the size of one element (or one block of 32 for Q8_0/Q4_0).
struct HostTensor {
    std::vector<unsigned char> bytes;
    fst_tensor t{};

    HostTensor(fst_type type, std::array<int64_t, 4> ne, size_t bytes_per_block, int64_t block = 1) {
        t.type = type;
        for (int i = 0; i < 4; ++i) t.ne[i] = ne[i];
        t.nb[0] = bytes_per_block;
        t.nb[1] = bytes_per_block * size_t(ne[0] / block);
        t.nb[2] = t.nb[1] * size_t(ne[1]);
        t.nb[3] = t.nb[2] * size_t(ne[2]);
        bytes.assign(t.nb[3] * size_t(ne[3]), 0);
        t.data = bytes.data();
    }
    HostTensor(const HostTensor &) = delete;
    HostTensor &operator=(const HostTensor &) = delete;

    unsigned char *at(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) {
        return bytes.data() + i0 * t.nb[0] + i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
    }
    void set_f32(float x, int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) {
        std::memcpy(at(i0, i1, i2, i3), &x, sizeof x);
    }
    void set_i32(int32_t x, int64_t i0, int64_t i1 = 0) { std::memcpy(at(i0, i1), &x, sizeof x); }
};

HostTensor f32(std::array<int64_t, 4> ne) { return HostTensor(FST_TYPE_F32, ne, 4); }

fst_attn_params params(float scale = 1.0f) {
    fst_attn_params p{}; // no virtual mask, no ALiBi, no softcap
    p.scale = scale;
    return p;
}

size_t row_index(const ref::Result &r, int64_t h, int64_t q_row = 0, int64_t s = 0) {
    return size_t((s * r.n_q + q_row) * r.n_head + h);
}

// ---- decoding ----

TEST(ReferenceDecode, F16) {
    EXPECT_EQ(ref::f16_to_double(0x3c00), 1.0);
    EXPECT_EQ(ref::f16_to_double(0xc000), -2.0);
    EXPECT_EQ(ref::f16_to_double(0x3555), 0.333251953125); // 1365/4096
    EXPECT_EQ(ref::f16_to_double(0x7bff), 65504.0);        // largest finite
    EXPECT_EQ(ref::f16_to_double(0x0400), std::ldexp(1.0, -14)); // smallest normal
    EXPECT_EQ(ref::f16_to_double(0x03ff), 1023 * std::ldexp(1.0, -24)); // largest subnormal
    EXPECT_EQ(ref::f16_to_double(0x0001), std::ldexp(1.0, -24));        // smallest subnormal
    EXPECT_EQ(ref::f16_to_double(0x8001), -std::ldexp(1.0, -24));
    EXPECT_EQ(ref::f16_to_double(0x7c00), kInf);
    EXPECT_EQ(ref::f16_to_double(0xfc00), -kInf);
    EXPECT_TRUE(std::isnan(ref::f16_to_double(0x7e00)));
    EXPECT_TRUE(std::isnan(ref::f16_to_double(0x7c01)));
    EXPECT_EQ(ref::f16_to_double(0x8000), 0.0);
    EXPECT_TRUE(std::signbit(ref::f16_to_double(0x8000)));
}

TEST(ReferenceDecode, BF16) {
    EXPECT_EQ(ref::bf16_to_double(0x3f80), 1.0);
    EXPECT_EQ(ref::bf16_to_double(0xc000), -2.0);
    EXPECT_EQ(ref::bf16_to_double(0x4049), 3.140625);
    EXPECT_EQ(ref::bf16_to_double(0x0080), std::ldexp(1.0, -126)); // smallest normal
    EXPECT_EQ(ref::bf16_to_double(0x0001), std::ldexp(1.0, -133)); // F32 subnormal 2^-149 * 2^16
    EXPECT_EQ(ref::bf16_to_double(0x7f7f), std::ldexp(255.0, 120)); // largest finite: 1.9921875 * 2^127
    EXPECT_EQ(ref::bf16_to_double(0x7f80), kInf);
    EXPECT_EQ(ref::bf16_to_double(0xff80), -kInf);
    EXPECT_TRUE(std::isnan(ref::bf16_to_double(0x7fc0)));
}

TEST(ReferenceDecode, Q8_0TwoBlocksInAPaddedRow) {
    // Row of 64 elements = 2 blocks; 2 rows, the second one 6 bytes further than contiguous.
    HostTensor t(FST_TYPE_Q8_0, {64, 2, 1, 1}, 34, 32);
    t.t.nb[1] = 2 * 34 + 6;
    t.t.nb[2] = t.t.nb[3] = 2 * t.t.nb[1];
    t.bytes.assign(t.t.nb[2], 0);
    t.t.data = t.bytes.data();
    const uint16_t d_bits[2][2] = {{0x3800, 0xc400}, {0x3c00, 0x0001}}; // 0.5, -4; 1, 2^-24
    for (int row = 0; row < 2; ++row)
        for (int b = 0; b < 2; ++b) {
            unsigned char *block = t.bytes.data() + row * t.t.nb[1] + b * 34;
            block[0] = uint8_t(d_bits[row][b] & 0xff);
            block[1] = uint8_t(d_bits[row][b] >> 8);
            for (int j = 0; j < 32; ++j) block[2 + j] = uint8_t(int8_t(j * 8 - 128)); // -128, -120, ..., 120
        }
    const double d[2][2] = {{0.5, -4.0}, {1.0, std::ldexp(1.0, -24)}};
    for (int row = 0; row < 2; ++row)
        for (int i = 0; i < 64; ++i)
            EXPECT_EQ(ref::read(t.t, i, row), d[row][i / 32] * ((i % 32) * 8 - 128)) << "row " << row << " i " << i;
}

TEST(ReferenceDecode, Q4_0Nibbles) {
    HostTensor t(FST_TYPE_Q4_0, {64, 1, 1, 1}, 18, 32);
    const uint16_t d_bits[2] = {0x4000, 0xbc00}; // 2, -1
    for (int b = 0; b < 2; ++b) {
        unsigned char *block = t.bytes.data() + b * 18;
        block[0] = uint8_t(d_bits[b] & 0xff);
        block[1] = uint8_t(d_bits[b] >> 8);
        // Byte j: low nibble j (element j), high nibble 15 - j (element j + 16).
        for (int j = 0; j < 16; ++j) block[2 + j] = uint8_t(j | ((15 - j) << 4));
    }
    const double d[2] = {2.0, -1.0};
    for (int i = 0; i < 64; ++i) {
        const int j = i % 32;
        const int nibble = j < 16 ? j : 15 - (j - 16);
        EXPECT_EQ(ref::read(t.t, i), d[i / 32] * (nibble - 8)) << "i " << i;
    }
    EXPECT_EQ(ref::read(t.t, 0), -16.0);  // 2 * (0 - 8)
    EXPECT_EQ(ref::read(t.t, 16), 14.0);  // 2 * (15 - 8)
    EXPECT_EQ(ref::read(t.t, 32), 8.0);   // block 1, element 0: -1 * (0 - 8)
    EXPECT_EQ(ref::read(t.t, 47), -7.0);  // block 1, element 15: -1 * (15 - 8)
}

TEST(ReferenceRead, StridedAndPermutedF32Views) {
    HostTensor t = f32({3, 2, 2, 1});
    for (int i2 = 0; i2 < 2; ++i2)
        for (int i1 = 0; i1 < 2; ++i1)
            for (int i0 = 0; i0 < 3; ++i0) t.set_f32(float(100 * i2 + 10 * i1 + i0), i0, i1, i2);
    EXPECT_EQ(ref::read(t.t, 2, 1, 1), 112.0);
    // Swap dimensions 1 and 2 by swapping their extents and strides, as ggml_permute does.
    fst_tensor p = t.t;
    std::swap(p.ne[1], p.ne[2]);
    std::swap(p.nb[1], p.nb[2]);
    EXPECT_EQ(ref::read(p, 2, 1, 0), 102.0);
    EXPECT_EQ(ref::read(p, 1, 0, 1), 11.0);
}

// ---- attention ----

TEST(ReferenceAttention, TwoKeysSoftmaxByHand) {
    // q = (2, 0), scale 0.5: logits 1 (k0 = (1, 0)) and 0 (k1 = (0, 3)); v0 = (2, 0), v1 = (0, 4).
    HostTensor q = f32({2, 1, 1, 1}), k = f32({2, 2, 1, 1}), v = f32({2, 2, 1, 1});
    q.set_f32(2, 0);
    k.set_f32(1, 0, 0);
    k.set_f32(3, 1, 1);
    v.set_f32(2, 0, 0);
    v.set_f32(4, 1, 1);
    const ref::Result r = ref::attention(params(0.5f), q.t, k.t, v.t, nullptr, nullptr);
    const double S = 1 + std::exp(-1.0);
    EXPECT_DOUBLE_EQ(r.M[0], 1.0);
    EXPECT_DOUBLE_EQ(r.S[0], S);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 0, 0), 2 / S);
    EXPECT_DOUBLE_EQ(r.o(1, 0, 0, 0), 4 * std::exp(-1.0) / S);
}

TEST(ReferenceAttention, HugeLogitsDoNotOverflow) {
    // Logits 1000 and 999 come from an F32 mask; exp(1000) overflows a double, exp(x - M) does not.
    HostTensor q = f32({1, 1, 1, 1}), k = f32({1, 2, 1, 1}), v = f32({1, 2, 1, 1}), mask = f32({2, 1, 1, 1});
    v.set_f32(3, 0, 0);
    v.set_f32(-1, 0, 1);
    mask.set_f32(1000, 0);
    mask.set_f32(999, 1);
    const ref::Result r = ref::attention(params(), q.t, k.t, v.t, &mask.t, nullptr);
    const double e = std::exp(-1.0);
    EXPECT_DOUBLE_EQ(r.M[0], 1000.0);
    EXPECT_DOUBLE_EQ(r.S[0], 1 + e);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 0, 0), (3 - e) / (1 + e));
}

TEST(ReferenceAttention, MaskHidesKeysAndAFullyMaskedRowIsEmpty) {
    // Two query rows, two keys with v = 5 and 7; row 0 hides key 1, row 1 hides both.
    HostTensor q = f32({1, 2, 1, 1}), k = f32({1, 2, 1, 1}), v = f32({1, 2, 1, 1});
    HostTensor mask(FST_TYPE_F16, {2, 2, 1, 1}, 2);
    v.set_f32(5, 0, 0);
    v.set_f32(7, 0, 1);
    const uint16_t minus_inf = 0xfc00;
    std::memcpy(mask.at(1, 0), &minus_inf, 2);
    std::memcpy(mask.at(0, 1), &minus_inf, 2);
    std::memcpy(mask.at(1, 1), &minus_inf, 2);
    const ref::Result r = ref::attention(params(), q.t, k.t, v.t, &mask.t, nullptr);
    EXPECT_EQ(r.o(0, 0, 0, 0), 5.0);
    EXPECT_EQ(r.M[row_index(r, 0, 0)], 0.0);
    EXPECT_EQ(r.S[row_index(r, 0, 0)], 1.0);
    EXPECT_EQ(r.o(0, 0, 1, 0), 0.0);
    EXPECT_EQ(r.M[row_index(r, 0, 1)], -kInf);
    EXPECT_EQ(r.S[row_index(r, 0, 1)], 0.0);
}

TEST(ReferenceAttention, AlibiSlopesTwelveHeads) {
    // n_head = 12, max_bias = 8: n2 = 8, m0 = 2^(-8/8) = 1/2, m1 = 2^(-4/8) = 1/sqrt(2).
    // Heads 0..7: m0^(h+1); heads 8..11: m1^1, m1^3, m1^5, m1^7.
    const double expected[12] = {0.5,        0.25,       0.125,      0.0625,
                                 0.03125,    0.015625,   0.0078125,  0.00390625,
                                 0.70710678118654752, 0.35355339059327376, 0.17677669529663688,
                                 0.08838834764831844};
    // One key with logit 0 and mask value -1: the row's max logit is -slope_h.
    HostTensor q = f32({1, 1, 12, 1}), k = f32({1, 1, 1, 1}), v = f32({1, 1, 1, 1}), mask = f32({1, 1, 1, 1});
    mask.set_f32(-1, 0);
    fst_attn_params p = params();
    p.max_bias = 8;
    const ref::Result r = ref::attention(p, q.t, k.t, v.t, &mask.t, nullptr);
    for (int h = 0; h < 12; ++h) {
        EXPECT_NEAR(ref::alibi_slope(12, 8.0, h), expected[h], 1e-15) << "head " << h;
        EXPECT_NEAR(r.M[row_index(r, h)], -expected[h], 1e-15) << "head " << h;
    }
}

TEST(ReferenceAttention, AlibiSlopesOtherHeadCounts) {
    // n_head = 8 is a power of two: every head uses m0 = 2^(-max_bias/8).
    for (int h = 0; h < 8; ++h) EXPECT_NEAR(ref::alibi_slope(8, 8.0, h), std::ldexp(1.0, -(h + 1)), 1e-15);
    // n_head = 5, max_bias = 8: n2 = 4, m0 = 2^-2, m1 = 2^-1; head 4 is m1^1.
    EXPECT_NEAR(ref::alibi_slope(5, 8.0, 0), 0.25, 1e-15);
    EXPECT_NEAR(ref::alibi_slope(5, 8.0, 3), std::pow(0.25, 4), 1e-15);
    EXPECT_NEAR(ref::alibi_slope(5, 8.0, 4), 0.5, 1e-15);
    // No ALiBi.
    EXPECT_EQ(ref::alibi_slope(12, 0.0, 11), 1.0);
}

TEST(ReferenceAttention, SoftcapAppliesBeforeTheMask) {
    // Logit 10 with softcap 5 becomes 5 tanh(2); the mask's -2 is added afterwards, not capped.
    HostTensor q = f32({1, 1, 1, 1}), k = f32({1, 1, 1, 1}), v = f32({1, 1, 1, 1}), mask = f32({1, 1, 1, 1});
    q.set_f32(10, 0);
    k.set_f32(1, 0);
    mask.set_f32(-2, 0);
    fst_attn_params p = params();
    p.softcap = 5;
    const ref::Result r = ref::attention(p, q.t, k.t, v.t, &mask.t, nullptr);
    EXPECT_DOUBLE_EQ(r.M[0], 5 * std::tanh(2.0) - 2);
}

TEST(ReferenceAttention, GqaHeadsAndSequenceBroadcast) {
    // 4 query heads over 2 KV heads, 4 sequences over 2 KV sequences; one key whose value names its (head, seq).
    HostTensor q = f32({1, 1, 4, 4}), k = f32({1, 1, 2, 2}), v = f32({1, 1, 2, 2});
    for (int hk = 0; hk < 2; ++hk)
        for (int sk = 0; sk < 2; ++sk) v.set_f32(float(10 * hk + sk + 1), 0, 0, hk, sk);
    const ref::Result r = ref::attention(params(), q.t, k.t, v.t, nullptr, nullptr);
    for (int h = 0; h < 4; ++h)
        for (int s = 0; s < 4; ++s) EXPECT_EQ(r.o(0, h, 0, s), 10 * (h / 2) + s % 2 + 1) << h << " " << s;
}

TEST(ReferenceAttention, MaskBroadcastOverHeadsAndSequences) {
    // Mask [2 keys, 1 row, m2 = 2, m3 = 2] for 4 heads and 4 sequences: head h, seq s read slice (h % 2, s % 2).
    // Key 0: value 0, mask 0; key 1: value 1, mask -(a + 2b) for slice (a, b). O = e^m / (1 + e^m).
    HostTensor q = f32({1, 1, 4, 4}), k = f32({1, 2, 1, 1}), v = f32({1, 2, 1, 1}), mask = f32({2, 1, 2, 2});
    v.set_f32(1, 0, 1);
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) mask.set_f32(float(-(a + 2 * b)), 1, 0, a, b);
    const ref::Result r = ref::attention(params(), q.t, k.t, v.t, &mask.t, nullptr);
    for (int h = 0; h < 4; ++h)
        for (int s = 0; s < 4; ++s) {
            const double m = -(h % 2 + 2 * (s % 2));
            EXPECT_DOUBLE_EQ(r.o(0, h, 0, s), std::exp(m) / (1 + std::exp(m))) << h << " " << s;
        }
}

// Keys with value j and logit 0: the output is the mean of the visible j.
struct CountingKeys {
    HostTensor q, k, v;
    CountingKeys(int64_t n_q, int64_t n_kv, int64_t n_seq = 1)
        : q(FST_TYPE_F32, {1, n_q, 1, n_seq}, 4), k(FST_TYPE_F32, {1, n_kv, 1, 1}, 4),
          v(FST_TYPE_F32, {1, n_kv, 1, 1}, 4) {
        for (int64_t j = 0; j < n_kv; ++j) v.set_f32(float(j), 0, j);
    }
};

TEST(ReferenceAttention, CausalAndSlidingWindowFromStartPositions) {
    CountingKeys c(3, 5);
    fst_attn_params p = params();
    p.virtual_mask = FST_MASK_CAUSAL;
    p.q_pos0 = 2; // row r at position 2 + r sees keys 0 .. 2 + r
    ref::Result r = ref::attention(p, c.q.t, c.k.t, c.v.t, nullptr, nullptr);
    for (int row = 0; row < 3; ++row) EXPECT_DOUBLE_EQ(r.o(0, 0, row, 0), (2 + row) / 2.0) << row;

    p.virtual_mask = FST_MASK_SLIDING_WINDOW;
    p.window = 2; // also hides keys with pos_q - pos_k >= 2: sees pos_q - 1 and pos_q
    r = ref::attention(p, c.q.t, c.k.t, c.v.t, nullptr, nullptr);
    for (int row = 0; row < 3; ++row) EXPECT_DOUBLE_EQ(r.o(0, 0, row, 0), 1.5 + row) << row;

    // A segment starting at position 10, queries from 11: row 0 sees keys 0 and 1 (positions 10, 11).
    p.virtual_mask = FST_MASK_CAUSAL;
    p.q_pos0 = 11;
    p.kv_pos0 = 10;
    r = ref::attention(p, c.q.t, c.k.t, c.v.t, nullptr, nullptr);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 0, 0), 0.5);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 2, 0), 1.5); // position 13 sees keys 10..13

    // Queries before every key see nothing.
    p.q_pos0 = 0;
    r = ref::attention(p, c.q.t, c.k.t, c.v.t, nullptr, nullptr);
    EXPECT_EQ(r.S[row_index(r, 0, 0)], 0.0);
    EXPECT_EQ(r.M[row_index(r, 0, 0)], -kInf);
}

TEST(ReferenceAttention, PositionTensorsPerSequenceColumn) {
    // 4 sequences read position columns s % 2. Column 0: q {1, 3}, kv {0, 1, 2, 3};
    // column 1 (a cache with gaps): q {0, 0}, kv {5, 0, 7, 0}.
    CountingKeys c(2, 4, 4);
    HostTensor q_pos(FST_TYPE_I32, {2, 2, 1, 1}, 4), kv_pos(FST_TYPE_I32, {4, 2, 1, 1}, 4);
    const int32_t qp[2][2] = {{1, 3}, {0, 0}};
    const int32_t kp[2][4] = {{0, 1, 2, 3}, {5, 0, 7, 0}};
    for (int col = 0; col < 2; ++col) {
        for (int r = 0; r < 2; ++r) q_pos.set_i32(qp[col][r], r, col);
        for (int j = 0; j < 4; ++j) kv_pos.set_i32(kp[col][j], j, col);
    }
    fst_attn_params p = params();
    p.virtual_mask = FST_MASK_CAUSAL;
    p.q_pos = &q_pos.t;
    p.kv_pos = &kv_pos.t;
    ref::Result r = ref::attention(p, c.q.t, c.k.t, c.v.t, nullptr, nullptr);
    for (int s = 0; s < 4; s += 2) {
        EXPECT_DOUBLE_EQ(r.o(0, 0, 0, s), 0.5) << s;     // keys 0, 1
        EXPECT_DOUBLE_EQ(r.o(0, 0, 1, s), 1.5) << s;     // keys 0..3
        EXPECT_DOUBLE_EQ(r.o(0, 0, 0, s + 1), 2.0) << s; // keys 1, 3 (position 0)
        EXPECT_DOUBLE_EQ(r.o(0, 0, 1, s + 1), 2.0) << s;
    }
    // Window 1 keeps only keys at exactly the query's position.
    p.virtual_mask = FST_MASK_SLIDING_WINDOW;
    p.window = 1;
    r = ref::attention(p, c.q.t, c.k.t, c.v.t, nullptr, nullptr);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 0, 0), 1.0);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 1, 0), 3.0);
    EXPECT_DOUBLE_EQ(r.o(0, 0, 0, 1), 2.0);
}

TEST(ReferenceAttention, SinksAreOneZeroValuedKey) {
    // One visible key (logit 0, value 8) and a sink with logit ln 3: weights 1/4 and 3/4, so O = 2.
    // Row 1 is fully masked: the sink alone gives M = ln 3, S = 1, O = 0.
    HostTensor q = f32({1, 2, 1, 1}), k = f32({1, 1, 1, 1}), v = f32({1, 1, 1, 1}), mask = f32({1, 2, 1, 1});
    HostTensor sinks = f32({1, 1, 1, 1});
    v.set_f32(8, 0);
    mask.set_f32(-INFINITY, 0, 1);
    sinks.set_f32(float(std::log(3.0)), 0);
    const double sink = double(float(std::log(3.0)));
    const ref::Result r = ref::attention(params(), q.t, k.t, v.t, &mask.t, &sinks.t);
    EXPECT_DOUBLE_EQ(r.M[row_index(r, 0, 0)], sink);
    EXPECT_DOUBLE_EQ(r.S[row_index(r, 0, 0)], 1 + std::exp(-sink));
    EXPECT_NEAR(r.o(0, 0, 0, 0), 8.0 / 4.0, 1e-7); // ln 3 rounded to F32
    EXPECT_DOUBLE_EQ(r.o(0, 0, 0, 0), 8.0 / (1 + std::exp(sink)));
    EXPECT_EQ(r.M[row_index(r, 0, 1)], sink);
    EXPECT_EQ(r.S[row_index(r, 0, 1)], 1.0);
    EXPECT_EQ(r.o(0, 0, 1, 0), 0.0);
}

TEST(ReferenceAttention, QuantizedKeysAndValuesAreDecoded) {
    // K: one Q8_0 row (d = 0.25, q_i = i - 16); q = e_19, so the logit is 0.25 * 3.
    // V: one Q4_0 row (d = -2, byte j = 0x5A): elements 0..15 are -2 * (10 - 8), 16..31 are -2 * (5 - 8).
    HostTensor q = f32({32, 1, 1, 1});
    HostTensor k(FST_TYPE_Q8_0, {32, 1, 1, 1}, 34, 32), v(FST_TYPE_Q4_0, {32, 1, 1, 1}, 18, 32);
    q.set_f32(1, 19);
    k.bytes[0] = 0x00;
    k.bytes[1] = 0x34; // 0x3400 = 0.25
    for (int i = 0; i < 32; ++i) k.bytes[size_t(2 + i)] = uint8_t(int8_t(i - 16));
    v.bytes[0] = 0x00;
    v.bytes[1] = 0xc0; // 0xc000 = -2
    for (int j = 0; j < 16; ++j) v.bytes[size_t(2 + j)] = 0x5a;
    const ref::Result r = ref::attention(params(), q.t, k.t, v.t, nullptr, nullptr);
    EXPECT_EQ(r.M[0], 0.75);
    for (int c = 0; c < 32; ++c) EXPECT_EQ(r.o(c, 0, 0, 0), c < 16 ? -4.0 : 6.0) << c;
}

// ---- the error measure ----

TEST(ReferenceRelError, MaxAbsoluteDifferenceOverMaxReference) {
    ref::Result expected;
    expected.DV = 2;
    expected.n_head = expected.n_q = expected.n_seq = 1;
    expected.O = {2.0, -1.0};
    // out with a padded row stride: [DV = 2, 1, 1, 1].
    HostTensor out = f32({2, 1, 1, 1});
    out.set_f32(2.0f, 0);
    out.set_f32(-1.01f, 1);
    EXPECT_NEAR(ref::rel_error(expected, out.t), double(1.01f - 1.0) / 2.0, 1e-12);

    out.set_f32(NAN, 1);
    EXPECT_EQ(ref::rel_error(expected, out.t), kInf);
    out.set_f32(INFINITY, 1);
    EXPECT_EQ(ref::rel_error(expected, out.t), kInf);

    // The floor: a zero reference is compared absolutely, scaled by 1e-6.
    expected.O = {0.0, 0.0};
    out.set_f32(1e-7f, 0);
    out.set_f32(0.0f, 1);
    EXPECT_NEAR(ref::rel_error(expected, out.t), double(1e-7f) / 1e-6, 1e-12);

    // A view of the wrong shape never passes.
    fst_tensor wrong = out.t;
    wrong.ne[0] = 1;
    EXPECT_EQ(ref::rel_error(expected, wrong), kInf);
}

} // namespace
