// Element types: sizes, block layouts, and exact conversions between the stored formats and F32.
#pragma once

#include <flashstate/flashstate.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fst {

constexpr int64_t kQuantBlock = 32;       // elements per Q8_0 / Q4_0 block
constexpr size_t kQ8_0BlockBytes = 34;    // F16 d + 32 int8
constexpr size_t kQ4_0BlockBytes = 18;    // F16 d + 16 bytes of nibbles

// The integer behind an enum field a C caller filled in. Read through memcpy: a C caller may store any int there,
// and loading an out-of-range value as the C++ enum type is undefined behaviour.
template <class E> int enum_value(const E &e) {
    static_assert(sizeof(E) == sizeof(int), "C enums are int-sized here");
    int v;
    std::memcpy(&v, &e, sizeof v);
    return v;
}

bool type_known(int t);
inline bool type_known(const fst_type &t) { return type_known(enum_value(t)); }
const char *type_name(fst_type t);        // "f32", ...; "unknown" when not known
int64_t block_elems(fst_type t);          // 32 for quantized types, 1 otherwise
size_t block_bytes(fst_type t);           // nb[0] of a view of this type
size_t type_alignment(fst_type t);        // required alignment of data and of nb[1..3]
inline bool type_is_quantized(fst_type t) { return t == FST_TYPE_Q8_0 || t == FST_TYPE_Q4_0; }

// IEEE binary16 and bfloat16: exact widening, round-to-nearest-even narrowing (NaN stays NaN, made quiet).
// Exact. Inline: masks are converted element by element in the attention loop.
inline float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else {
        // Zero or subnormal: mant * 2^-24 is exact in F32 (a multiplication: ldexp made zeros, e.g. every entry of
        // a causal mask, ten times slower to convert).
        float f = float(mant) * 0x1p-24f;
        std::memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
uint16_t f32_to_bf16(float f);

inline uint16_t load_u16(const void *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// One row of n elements (n a multiple of 32 for quantized types) to F32, exactly as stored.
void row_to_f32(fst_type t, const void *src, float *dst, int64_t n);
// One row of n F32 values to type t: rounding to nearest even, or ggml's reference quantizer.
void row_from_f32(fst_type t, const float *src, void *dst, int64_t n);

} // namespace fst
