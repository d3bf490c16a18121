#include "tensor/types.h"

#include "common/error.h"

#include <cmath>
#include <string>

namespace fst {

bool type_known(int t) {
    return t == FST_TYPE_F32 || t == FST_TYPE_F16 || t == FST_TYPE_BF16 || t == FST_TYPE_Q8_0 || t == FST_TYPE_Q4_0 ||
           t == FST_TYPE_I32;
}

const char *type_name(fst_type t) {
    switch (t) {
    case FST_TYPE_F32: return "f32";
    case FST_TYPE_F16: return "f16";
    case FST_TYPE_BF16: return "bf16";
    case FST_TYPE_Q8_0: return "q8_0";
    case FST_TYPE_Q4_0: return "q4_0";
    case FST_TYPE_I32: return "i32";
    }
    return "unknown";
}

int64_t block_elems(fst_type t) { return type_is_quantized(t) ? kQuantBlock : 1; }

size_t block_bytes(fst_type t) {
    switch (t) {
    case FST_TYPE_F32: case FST_TYPE_I32: return 4;
    case FST_TYPE_F16: case FST_TYPE_BF16: return 2;
    case FST_TYPE_Q8_0: return kQ8_0BlockBytes;
    case FST_TYPE_Q4_0: return kQ4_0BlockBytes;
    }
    return 0;
}

size_t type_alignment(fst_type t) {
    // Quantized blocks start with an F16 scale; 34 and 18 keep every block 2-byte aligned.
    return t == FST_TYPE_F32 || t == FST_TYPE_I32 ? 4 : 2;
}


uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000) return uint16_t(sign | 0x7e00 | ((x >> 13) & 0x3ff)); // NaN, quiet
    if (x >= 0x477ff000) return uint16_t(sign | 0x7c00);                    // >= 65520 rounds to inf
    if (x < 0x38800000) {                                                     // below 2^-14: subnormal
        float a;
        std::memcpy(&a, &x, 4);
        return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.0f)));    // default mode: nearest even
    }
    uint32_t h = ((((x >> 23) - 112) << 10) | ((x >> 13) & 0x3ff));
    uint32_t rest = x & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h; // a carry into the exponent is the right result
    return uint16_t(sign | h);
}

uint16_t f32_to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40); // NaN, quiet
    return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

namespace {

void q8_0_to_f32(const unsigned char *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / kQuantBlock; ++b, src += kQ8_0BlockBytes) {
        const float d = f16_to_f32(load_u16(src));
        for (int i = 0; i < 32; ++i) dst[b * 32 + i] = d * float(int8_t(src[2 + i]));
    }
}

void q4_0_to_f32(const unsigned char *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / kQuantBlock; ++b, src += kQ4_0BlockBytes) {
        const float d = f16_to_f32(load_u16(src));
        for (int i = 0; i < 16; ++i) {
            dst[b * 32 + i] = d * float(int(src[2 + i] & 0x0f) - 8);
            dst[b * 32 + 16 + i] = d * float(int(src[2 + i] >> 4) - 8);
        }
    }
}

// ggml's reference Q8_0 quantizer: d = amax / 127, q = round-half-away(x / d).
void f32_to_q8_0(const float *src, unsigned char *dst, int64_t n) {
    for (int64_t b = 0; b < n / kQuantBlock; ++b, src += 32, dst += kQ8_0BlockBytes) {
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(src[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_f16(d);
        std::memcpy(dst, &dh, 2);
        for (int i = 0; i < 32; ++i) {
            // Non-finite products (NaN input, or 1/d overflowing for a subnormal d) store 0, as ggml's x86 build does;
            // converting them to int8 would be undefined.
            const float v = std::round(src[i] * id);
            dst[2 + i] = uint8_t(std::isfinite(v) ? int8_t(v) : int8_t(0));
        }
    }
}

// ggml's reference Q4_0 quantizer: d = (signed value of largest magnitude, first on ties) / -8,
// nibble = min(15, trunc(x / d + 8.5)).
void f32_to_q4_0(const float *src, unsigned char *dst, int64_t n) {
    for (int64_t b = 0; b < n / kQuantBlock; ++b, src += 32, dst += kQ4_0BlockBytes) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < 32; ++i) {
            if (amax < std::fabs(src[i])) {
                amax = std::fabs(src[i]);
                max = src[i];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_f16(d);
        std::memcpy(dst, &dh, 2);
        for (int i = 0; i < 16; ++i) {
            const float x0 = src[i] * id + 8.5f, x1 = src[16 + i] * id + 8.5f; // non-finite: 0, as above
            const int lo = std::min(15, std::isfinite(x0) ? int(int8_t(x0)) : 0);
            const int hi = std::min(15, std::isfinite(x1) ? int(int8_t(x1)) : 0);
            dst[2 + i] = uint8_t(lo | (hi << 4));
        }
    }
}

} // namespace

void row_to_f32(fst_type t, const void *src, float *dst, int64_t n) {
    if (n <= 0) return; // src and dst may be NULL then
    const auto *s = static_cast<const unsigned char *>(src);
    switch (t) {
    case FST_TYPE_F32: std::memcpy(dst, s, size_t(n) * 4); return;
    case FST_TYPE_F16: for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(s + 2 * i)); return;
    case FST_TYPE_BF16: for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(s + 2 * i)); return;
    case FST_TYPE_Q8_0: q8_0_to_f32(s, dst, n); return;
    case FST_TYPE_Q4_0: q4_0_to_f32(s, dst, n); return;
    case FST_TYPE_I32: for (int64_t i = 0; i < n; ++i) { int32_t v; std::memcpy(&v, s + 4 * i, 4); dst[i] = float(v); } return;
    }
}

void row_from_f32(fst_type t, const float *src, void *dst, int64_t n) {
    if (n <= 0) return; // src and dst may be NULL then
    auto *d = static_cast<unsigned char *>(dst);
    switch (t) {
    case FST_TYPE_F32: std::memcpy(d, src, size_t(n) * 4); return;
    case FST_TYPE_F16: for (int64_t i = 0; i < n; ++i) { uint16_t h = f32_to_f16(src[i]); std::memcpy(d + 2 * i, &h, 2); } return;
    case FST_TYPE_BF16: for (int64_t i = 0; i < n; ++i) { uint16_t h = f32_to_bf16(src[i]); std::memcpy(d + 2 * i, &h, 2); } return;
    case FST_TYPE_Q8_0: f32_to_q8_0(src, d, n); return;
    case FST_TYPE_Q4_0: f32_to_q4_0(src, d, n); return;
    case FST_TYPE_I32: for (int64_t i = 0; i < n; ++i) { int32_t v = int32_t(src[i]); std::memcpy(d + 4 * i, &v, 4); } return;
    }
}

namespace {
// `raw` is the type as the caller stored it: it becomes an fst_type only once known to be one.
void check_row_args(int raw, const void *a, const void *b, int64_t n) {
    if (!type_known(raw) || raw == FST_TYPE_I32)
        fail("row", "type", std::to_string(raw) + " (" + (type_known(raw) ? type_name(fst_type(raw)) : "unknown") + ")",
             "one of f32, f16, bf16, q8_0, q4_0", FST_ERR_UNSUPPORTED);
    const fst_type t = fst_type(raw);
    if (n < 0) fail("row", "n", n, ">= 0");
    if (n % block_elems(t) != 0)
        fail("row", "n", n, "a multiple of " + std::to_string(block_elems(t)) + " for " + type_name(t));
    if (n > 0 && a == nullptr) fail("row", "src", "NULL", "non-NULL for n = " + std::to_string(n));
    if (n > 0 && b == nullptr) fail("row", "dst", "NULL", "non-NULL for n = " + std::to_string(n));
}
} // namespace

} // namespace fst

using namespace fst;

extern "C" {

fst_status fst_quantize_row(fst_type type, const float *src, void *dst, int64_t n) {
    const int raw = enum_value(type); // read as an int: a C caller may pass any value
    return guard("fst_quantize_row", [&] {
        check_row_args(raw, src, dst, n);
        row_from_f32(fst_type(raw), src, dst, n);
    });
}

fst_status fst_dequantize_row(fst_type type, const void *src, float *dst, int64_t n) {
    const int raw = enum_value(type);
    return guard("fst_dequantize_row", [&] {
        check_row_args(raw, src, dst, n);
        row_to_f32(fst_type(raw), src, dst, n);
    });
}

const char *fst_type_name(fst_type t) { return type_known(t) ? type_name(t) : nullptr; }
int64_t fst_type_block_size(fst_type t) { return type_known(t) ? block_elems(t) : 0; }
size_t fst_type_size(fst_type t) { return type_known(t) ? block_bytes(t) : 0; }

fst_tensor fst_tensor_contiguous(fst_type type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, void *data) {
    fst_tensor t{};
    std::memcpy(&t.type, &type, sizeof type); // copied as bytes: an unknown value stays as the caller gave it
    t.ne[0] = ne0; t.ne[1] = ne1; t.ne[2] = ne2; t.ne[3] = ne3;
    const bool known = type_known(type);
    t.nb[0] = known ? block_bytes(type) : 0;
    const int64_t be = known ? block_elems(type) : 1;
    t.nb[1] = t.nb[0] * size_t(ne0 / be);
    t.nb[2] = t.nb[1] * size_t(ne1);
    t.nb[3] = t.nb[2] * size_t(ne2);
    t.data = data;
    return t;
}

size_t fst_tensor_nbytes(const fst_tensor *t) {
    if (t == nullptr || !type_known(t->type)) return 0;
    for (int i = 0; i < 4; ++i)
        if (t->ne[i] <= 0) return 0;
    size_t bytes = t->nb[0] * size_t(t->ne[0] / block_elems(t->type));
    for (int i = 1; i < 4; ++i) bytes += size_t(t->ne[i] - 1) * t->nb[i];
    return bytes;
}

} // extern "C"
