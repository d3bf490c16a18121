// fst_quantize_row and fst_dequantize_row under libFuzzer. The input decides the operation (quantize, dequantize,
// or a round trip), the type (known and unknown), n (including negative, huge and non-multiples of the block),
// NULL pointers, and the data: finite values below 2^14 in magnitude (down to subnormals), or raw bit patterns.
// Buffers are exactly n floats and n / block * block_bytes bytes. Checked: no sanitizer report; a rejection has a
// message and writes nothing; an invalid type, n or NULL pointer is never accepted; the source is never written;
// finite bytes dequantize to finite floats; a round trip of finite values is exact for F32 and within the format's
// rounding for F16, BF16 (half an ulp) and Q8_0, Q4_0 (a bound from the block scale, see round_trip_bound).
#include "fuzz_support.h"

using namespace fuzz;

// c_api_calls.c: the converters with the type as an int, as C code may pass it.
extern "C" fst_status fuzz_quantize_row(int type, const float *src, void *dst, int64_t n);
extern "C" fst_status fuzz_dequantize_row(int type, const void *src, float *dst, int64_t n);

namespace {

constexpr int64_t kMaxN = int64_t(1) << 14;

// Largest |x - dequantize(quantize(x))| allowed for x in a block whose largest magnitude is amax.
double round_trip_bound(int type, double x, double amax) {
    const double f16_subnormal = std::ldexp(1.0, -25); // half the F16 subnormal step, on the scale d
    switch (type) {
    case FST_TYPE_F16: return std::fabs(x) * std::ldexp(1.0, -11) + f16_subnormal;
    case FST_TYPE_BF16:
        return std::fabs(x) * std::ldexp(1.0, -8) + std::ldexp(1.0, -134); // half a subnormal step
    // d = amax / 127, |q - x / d| <= 1/2, d stored as F16 (relative error 2^-11, |q| <= 127).
    case FST_TYPE_Q8_0: return (amax / 127.0 * 0.5 + amax * std::ldexp(1.0, -11)) * 1.001 + 127 * f16_subnormal;
    // |d| = amax / 8; q in -8..7, so the value 8|d| clamps to 7|d|: error up to |d|; d stored as F16 (|q| <= 8).
    case FST_TYPE_Q4_0: return (amax / 8.0 + amax * std::ldexp(1.0, -11)) * 1.001 + 8 * f16_subnormal;
    default: return 0.0;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Reader in(data, size);
    Memory mem;
    const uint8_t op = in.u8() % 3; // 0: quantize, 1: dequantize, 2: round trip
    const int type = any_type_code(in);
    const TypeInfo ti = type_info(type);
    int64_t n = in.u16() % 1025;
    if (in.u8() & 1) n = (n / 32) * 32; // mostly whole blocks
    if (in.rare())
        n = in.pick<int64_t>({-1, -32, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                              int64_t(1) << 40, 31, 33, (int64_t(1) << 62) + 32});
    const bool null_src = in.rare(), null_dst = in.rare();
    const Fill fill = in.u8() >= 224 ? Fill::Raw : Fill::Finite;
    // Finite values: |x| < 2^e, e up to 14 (F16 stays finite) or far below 1, down to F32 subnormals.
    const int scale_exponent =
        in.pick<int>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, -20, -100, -126, -130, -140});
    Rng rng(in.u64());

    const bool valid_type = ti.known && type != FST_TYPE_I32;
    std::string must_reject;
    if (!valid_type) must_reject = "type";
    else if (n < 0) must_reject = "negative n";
    else if (n % ti.block_elems != 0) must_reject = "n not a multiple of the block";
    else if (n > 0 && (null_src || null_dst)) must_reject = "NULL pointer";
    if (must_reject.empty() && n > kMaxN) return 0; // a well-formed call over memory the harness cannot back

    // Buffers: exactly n floats and the encoded size, or a small block when the call must be rejected anyway.
    const bool exact = must_reject.empty() || (valid_type && n >= 0 && n <= kMaxN);
    const size_t n_floats = exact ? size_t(n) : 16;
    const size_t n_bytes = exact ? size_t(n / ti.block_elems) * ti.block_bytes : 64;
    const int floats = mem.add(n_floats * 4), bytes = mem.add(n_bytes), floats_back = mem.add(n_floats * 4);
    float *x = reinterpret_cast<float *>(mem.data(floats));
    for (size_t i = 0; i < n_floats; ++i) {
        uint32_t bits = uint32_t(rng.next());
        float f;
        std::memcpy(&f, &bits, 4);
        x[i] = fill == Fill::Raw ? f : std::ldexp(float(int32_t(bits) >> 8) / float(1 << 23), scale_exponent);
    }
    unsigned char *q = mem.data(bytes);
    for (size_t i = 0; i < n_bytes; ++i) q[i] = fill == Fill::Raw ? rng.byte() : rng.byte() & 0xbf;
    float *back = reinterpret_cast<float *>(mem.data(floats_back));
    std::memset(back, 0x7f, n_floats * 4);

    const char *function = op == 1 ? "fst_dequantize_row" : "fst_quantize_row";
    float *src_f = null_src ? nullptr : x;
    unsigned char *dst_q = null_dst ? nullptr : q;
    mem.snapshot();
    prime_last_error(function);
    const fst_status st = op == 1 ? fuzz_dequantize_row(type, null_src ? nullptr : q, null_dst ? nullptr : back, n)
                                  : fuzz_quantize_row(type, src_f, dst_q, n);
    if (st != FST_OK) {
        check_rejection(st, function);
        if (!mem.unchanged(floats) || !mem.unchanged(bytes) || !mem.unchanged(floats_back))
            fail(std::string(function) + " wrote on failure");
        return 0;
    }
    note_accepted(function);
    if (!must_reject.empty()) fail(std::string(function) + " accepted an invalid call: " + must_reject);
    if (!mem.unchanged(op == 1 ? bytes : floats)) fail(std::string(function) + " wrote its source");

    if (op == 1) {
        if (fill == Fill::Finite)
            for (int64_t i = 0; i < n; ++i)
                if (!std::isfinite(back[i])) fail("finite bytes dequantized to a non-finite value");
        return 0;
    }
    if (op == 0 || fill == Fill::Raw) return 0;

    // Round trip of finite values.
    if (fuzz_dequantize_row(type, q, back, n) != FST_OK) fail("dequantizing what was just quantized failed");
    for (int64_t b = 0; b < n; b += ti.block_elems) {
        double amax = 0.0;
        for (int64_t i = b; i < b + ti.block_elems; ++i) amax = std::max(amax, std::fabs(double(x[i])));
        for (int64_t i = b; i < b + ti.block_elems; ++i) {
            if (type == FST_TYPE_F32
                    ? std::memcmp(&back[i], &x[i], 4) != 0
                    : !(std::fabs(double(back[i]) - double(x[i])) <= round_trip_bound(type, x[i], amax)))
                fail("round trip of " + std::to_string(x[i]) + " as type " + std::to_string(type) + " gave " +
                     std::to_string(back[i]));
        }
    }
    return 0;
}
