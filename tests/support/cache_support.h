// Helpers shared by the cache tests: random token rows, and what a cache layer stores, read back through
// fst_cache_segments and dequantized with fst_dequantize_row into one F32 K/V with an explicit position per token.
#pragma once

#include "reference/reference.h"
#include "support/buffer.h"
#include "support/cases.h"

#include <flashstate/flashstate.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace cache_test {

using fst_test::Buffer;

// n tokens of one layer: K [D, n, H] and V [DV, n, H] F32, N(0, 1).
struct Rows {
    Buffer k, v;
    Rows(int64_t D, int64_t DV, int64_t n, int64_t H, std::mt19937 &rng)
        : k(FST_TYPE_F32, {D, n, H, 1}), v(FST_TYPE_F32, {DV, n, H, 1}) {
        k.fill_normal(rng);
        v.fill_normal(rng);
    }
};

// Rows [j0, j0 + n) of a [D, N, H] view.
inline fst_tensor token_slice(const fst_tensor &t, int64_t j0, int64_t n) { return fst_test::slice(t, 1, j0, n); }

inline size_t row_bytes(fst_type type, int64_t n) {
    return fst_type_size(type) * size_t(n / fst_type_block_size(type));
}

// Everything a layer holds, oldest first: its raw stored rows (per segment type), dequantized F32 K [D, n, H],
// V [DV, n, H], and the I32 positions [n, 1].
struct Stored {
    int64_t n = 0;
    Buffer k, v, pos;
    std::vector<fst_type> type;             // of each token
    std::vector<std::vector<unsigned char>> k_bytes, v_bytes; // [token * H + h]: the stored bytes of that row
};

inline Stored read_stored(fst_cache *cache, int32_t layer, int64_t D, int64_t DV, int64_t H) {
    Stored s;
    int64_t n_segments = 0;
    EXPECT_EQ(fst_cache_segments(cache, layer, nullptr, nullptr, 0, &n_segments), FST_OK) << fst_last_error();
    std::vector<fst_segment> segments(static_cast<size_t>(n_segments));
    std::vector<fst_tensor> views(2 * size_t(n_segments));
    int64_t got = 0;
    EXPECT_EQ(fst_cache_segments(cache, layer, segments.data(), views.data(), n_segments, &got), FST_OK)
        << fst_last_error();
    EXPECT_EQ(got, n_segments);
    for (const fst_segment &g : segments) s.n += g.k->ne[1];
    s.k = Buffer(FST_TYPE_F32, {D, s.n > 0 ? s.n : 1, H, 1});
    s.v = Buffer(FST_TYPE_F32, {DV, s.n > 0 ? s.n : 1, H, 1});
    s.pos = Buffer(FST_TYPE_I32, {s.n > 0 ? s.n : 1, 1, 1, 1});
    s.k.t.ne[1] = s.v.t.ne[1] = s.pos.t.ne[0] = s.n;
    s.k_bytes.resize(size_t(s.n * H));
    s.v_bytes.resize(size_t(s.n * H));
    int64_t j = 0;
    for (const fst_segment &g : segments) {
        EXPECT_EQ(g.k->ne[0], D);
        EXPECT_EQ(g.k->ne[2], H);
        EXPECT_EQ(g.v->ne[1], g.k->ne[1]);
        EXPECT_EQ(g.mask, nullptr);
        EXPECT_EQ(g.kv_pos, nullptr);
        for (int64_t t = 0; t < g.k->ne[1]; ++t, ++j) {
            reinterpret_cast<int32_t *>(s.pos.storage.data())[j] = int32_t(g.kv_pos0 + t);
            s.type.push_back(g.k->type);
            for (int64_t h = 0; h < H; ++h) {
                const auto *kr = static_cast<const unsigned char *>(g.k->data) + t * g.k->nb[1] + h * g.k->nb[2];
                const auto *vr = static_cast<const unsigned char *>(g.v->data) + t * g.v->nb[1] + h * g.v->nb[2];
                s.k_bytes[size_t(j * H + h)].assign(kr, kr + row_bytes(g.k->type, D));
                s.v_bytes[size_t(j * H + h)].assign(vr, vr + row_bytes(g.v->type, DV));
                EXPECT_EQ(fst_dequantize_row(g.k->type, kr, s.k.f32(0, j, h), D), FST_OK);
                EXPECT_EQ(fst_dequantize_row(g.v->type, vr, s.v.f32(0, j, h), DV), FST_OK);
            }
        }
    }
    return s;
}

inline std::vector<int64_t> positions(const Stored &s) {
    std::vector<int64_t> p;
    for (int64_t j = 0; j < s.n; ++j) p.push_back(reinterpret_cast<const int32_t *>(s.pos.storage.data())[j]);
    return p;
}

// The positions a layer must hold after `appended` tokens: the first n_keep, then the newest max_tokens - n_keep
// (all of them when max_tokens is 0).
inline std::vector<int64_t> expected_positions(int64_t appended, int64_t n_keep, int64_t max_tokens) {
    std::vector<int64_t> p;
    const int64_t kept = std::min(appended, n_keep);
    for (int64_t i = 0; i < kept; ++i) p.push_back(i);
    int64_t first = kept;
    if (max_tokens > 0) first = std::max(first, appended - (max_tokens - n_keep));
    for (int64_t i = first; i < appended; ++i) p.push_back(i);
    return p;
}

// An F32 state/out pair for n_head heads and n_q queries, initialized empty.
struct Result {
    Buffer state, out;
    Result(int64_t DV, int64_t n_head, int64_t n_q)
        : state(FST_TYPE_F32, {2, n_head, n_q, 1}), out(FST_TYPE_F32, {DV, n_head, n_q, 1}) {
        EXPECT_EQ(fst_state_init(&state.t, &out.t), FST_OK) << fst_last_error();
    }
};

} // namespace cache_test
