// Test helpers: owning buffers behind fst_tensor views, with optional row padding, filled from float values.
#pragma once

#include <flashstate/flashstate.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace fst_test {

// An owning, 64-byte aligned byte buffer with a view over it. pad_bytes[i] adds that many bytes between
// consecutive entries of dimension i (i = 1..3), so strides are not the contiguous ones.
struct Buffer {
    std::vector<unsigned char> storage;
    fst_tensor t{};

    Buffer() = default;
    Buffer(fst_type type, std::array<int64_t, 4> ne, std::array<size_t, 4> pad_bytes = {0, 0, 0, 0}) {
        t.type = type;
        for (int i = 0; i < 4; ++i) t.ne[i] = ne[i];
        t.nb[0] = fst_type_size(type);
        size_t row = t.nb[0] * size_t(ne[0] / fst_type_block_size(type));
        t.nb[1] = row + pad_bytes[1];
        t.nb[2] = t.nb[1] * size_t(ne[1] > 0 ? ne[1] : 1) + pad_bytes[2];
        t.nb[3] = t.nb[2] * size_t(ne[2] > 0 ? ne[2] : 1) + pad_bytes[3];
        size_t bytes = t.nb[3] * size_t(ne[3] > 0 ? ne[3] : 1) + 64;
        storage.assign(bytes, 0);
        t.data = storage.data();
    }
    Buffer(const Buffer &o) : storage(o.storage), t(o.t) { t.data = storage.data(); }
    Buffer &operator=(const Buffer &o) {
        storage = o.storage;
        t = o.t;
        t.data = storage.data();
        return *this;
    }

    unsigned char *row(int64_t i1, int64_t i2 = 0, int64_t i3 = 0) {
        return storage.data() + i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
    }
    float *f32(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) {
        return reinterpret_cast<float *>(row(i1, i2, i3) + i0 * sizeof(float));
    }
    // Stores one row of ne[0] floats in the buffer's type (through the library's converter/quantizer).
    void set_row(const float *values, int64_t i1, int64_t i2 = 0, int64_t i3 = 0) {
        fst_quantize_row(t.type, values, row(i1, i2, i3), t.ne[0]);
    }
    // Fills every row with N(0, amplitude^2) values.
    void fill_normal(std::mt19937 &rng, float amplitude = 1.0f) {
        std::normal_distribution<float> nd(0.0f, amplitude);
        std::vector<float> r(size_t(t.ne[0]));
        for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
            for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
                for (int64_t i1 = 0; i1 < t.ne[1]; ++i1) {
                    for (auto &x : r) x = nd(rng);
                    set_row(r.data(), i1, i2, i3);
                }
    }
    void fill_bytes(unsigned char b) { std::memset(storage.data(), b, storage.size()); }
};

// A view of rows [j0, j0 + n) along dimension 1 (a KV segment, or a mask's column range when dim == 0).
inline fst_tensor slice(const fst_tensor &t, int dim, int64_t j0, int64_t n) {
    fst_tensor s = t;
    s.ne[dim] = n;
    size_t step = dim == 0 ? t.nb[0] / size_t(fst_type_block_size(t.type)) : t.nb[dim];
    // In integers: a view's stride may be anything where it never steps (one row), and the helper must not wrap a
    // pointer for views a test builds on purpose (the slice is then never read).
    s.data = t.data ? reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(t.data) + size_t(j0) * step) : nullptr;
    return s;
}

} // namespace fst_test
