#include "support/validation_problem.h"

#include <cstring>
#include <random>

namespace fst_test {

Buffer positions(int64_t n, int64_t m, int64_t start) {
    Buffer b(FST_TYPE_F32, {n, m, 1, 1});
    b.t.type = FST_TYPE_I32; // same size and alignment as F32
    for (int64_t c = 0; c < m; ++c)
        for (int64_t i = 0; i < n; ++i) {
            const int32_t pos = int32_t(start + c + i);
            std::memcpy(b.row(c) + i * 4, &pos, 4);
        }
    return b;
}

Problem::Problem(const Dims &d) : dims(d) {
    std::mt19937 rng(1234);
    q = Buffer(d.q_type, {d.D, d.n_q, d.n_head, d.n_seq});
    k = Buffer(d.k_type, {d.D, d.n_kv, d.n_head_kv, d.n_seq_kv});
    v = Buffer(d.v_type, {d.DV, d.n_kv, d.n_head_kv, d.n_seq_kv});
    q.fill_normal(rng);
    k.fill_normal(rng);
    v.fill_normal(rng);
    mask = Buffer(d.mask_type, {d.n_kv, d.mask_rows, d.m2, d.m3}); // zeros: every key visible
    sinks = Buffer(FST_TYPE_F32, {d.n_head, 1, 1, 1});
    for (int64_t h = 0; h < d.n_head; ++h) *sinks.f32(h) = 0.5f * float(h) - 0.7f;
    q_pos = positions(d.n_q, 1, d.n_kv - d.n_q);
    kv_pos = positions(d.n_kv, d.n_seq_kv, 0);
    // state and out with padding in every dimension; out with room for the overlap cases below.
    state = Buffer(FST_TYPE_F32, {2, d.n_head, d.n_q, d.n_seq}, {0, 8, 16, 0});
    out = Buffer(FST_TYPE_F32, {d.DV, d.n_head, d.n_q, d.n_seq}, {0, 16, 32, 4096});
    other_state = state;
    other_out = out;
    lse = Buffer(FST_TYPE_F32, {d.n_head, d.n_q, d.n_seq, 1}, {0, 4, 8, 0});
    for (int64_t s = 0; s < d.n_seq; ++s)
        for (int64_t r = 0; r < d.n_q; ++r)
            for (int64_t h = 0; h < d.n_head; ++h) *lse.f32(h, r, s) = 0.25f * float(h + r - s);
    floats = Buffer(FST_TYPE_F32, {256, 1, 1, 1});
    floats.fill_normal(rng);
    blocks = Buffer(FST_TYPE_F32, {256, 1, 1, 1}); // used as 1 KiB of raw bytes
    spare = Buffer(FST_TYPE_F16, {96, d.n_kv, d.n_head_kv, d.n_seq_kv});
    params = fst_attn_default_params();
    params.n_threads = 1;
    params.scale = 0.125f;
    fst_status a = fst_state_init(&state.t, &out.t);
    fst_status b = fst_state_init(&other_state.t, &other_out.t);
    fst_status c = fst_quantize_row(FST_TYPE_Q8_0, static_cast<const float *>(floats.t.data), blocks.t.data, row_n);
    setup_status = a != FST_OK ? a : b != FST_OK ? b : c;
}

const char *function_name(Entry e) {
    switch (e) {
    case Entry::attn: return "fst_attn_with_state";
    case Entry::attn_part: return "fst_attn_with_state_part";
    case Entry::segments: return "fst_attn_segments";
    case Entry::segments_part: return "fst_attn_segments_part";
    case Entry::init: return "fst_state_init";
    case Entry::merge: return "fst_state_merge";
    case Entry::add_sinks: return "fst_state_add_sinks";
    case Entry::export_lse: return "fst_state_export_lse";
    case Entry::import_lse: return "fst_state_import_lse";
    case Entry::quantize: return "fst_quantize_row";
    case Entry::dequantize: return "fst_dequantize_row";
    }
    return "?";
}

fst_status call(Entry e, Problem &p) {
    auto arg = [&](const char *name, Buffer &b) { return p.null_args.count(name) ? nullptr : &b.t; };
    auto raw = [&](const char *name, Buffer &b) { return p.null_args.count(name) ? nullptr : b.t.data; };
    fst_attn_params params = p.params; // position pointers set here, so copies of a Problem never dangle
    if (p.with_q_pos) params.q_pos = &p.q_pos.t;
    if (p.with_kv_pos) params.kv_pos = &p.kv_pos.t;
    const fst_attn_params *params_arg = p.null_args.count("params") ? nullptr : &params;
    const fst_tensor *mask = p.with_mask ? &p.mask.t : nullptr, *sinks = p.with_sinks ? &p.sinks.t : nullptr;
    fst_tensor views[2][3]; // k, v, mask of each segment
    fst_segment segments[2];
    for (int i = 0; i < 2; ++i) {
        const int64_t j0 = i == 0 ? 0 : p.split, n = i == 0 ? p.split : p.k.t.ne[1] - p.split;
        views[i][0] = fst_test::slice(p.k.t, 1, j0, n);
        views[i][1] = fst_test::slice(p.v.t, 1, j0, n);
        views[i][2] = fst_test::slice(p.mask.t, 0, j0, n);
    }
    if (p.edit_segments) p.edit_segments(p, views);
    for (int i = 0; i < 2; ++i)
        segments[i] = fst_segment{&views[i][0], &views[i][1], p.with_mask ? &views[i][2] : nullptr,
                                  i == 0 ? 0 : p.split, nullptr};
    const fst_segment *segments_arg = p.null_args.count("segments") ? nullptr : segments;
    switch (e) {
    case Entry::attn:
        return fst_attn_with_state(params_arg, arg("q", p.q), arg("k", p.k), arg("v", p.v), mask, sinks,
                                   arg("state", p.state), arg("out", p.out));
    case Entry::attn_part:
        return fst_attn_with_state_part(params_arg, arg("q", p.q), arg("k", p.k), arg("v", p.v), mask, sinks,
                                        arg("state", p.state), arg("out", p.out), p.part_ith, p.part_nth);
    case Entry::segments:
        return fst_attn_segments(params_arg, arg("q", p.q), segments_arg, p.n_segments, sinks, arg("state", p.state),
                                 arg("out", p.out));
    case Entry::segments_part:
        return fst_attn_segments_part(params_arg, arg("q", p.q), segments_arg, p.n_segments, sinks,
                                      arg("state", p.state), arg("out", p.out), p.part_ith, p.part_nth);
    case Entry::init: return fst_state_init(arg("state", p.state), arg("out", p.out));
    case Entry::merge:
        return fst_state_merge(arg("state", p.state), arg("out", p.out), arg("other_state", p.other_state),
                               arg("other_out", p.other_out));
    case Entry::add_sinks: return fst_state_add_sinks(arg("sinks", p.sinks), arg("state", p.state), arg("out", p.out));
    case Entry::export_lse: return fst_state_export_lse(arg("state", p.state), p.base, arg("lse", p.lse));
    case Entry::import_lse:
        return fst_state_import_lse(arg("lse", p.lse), p.base, arg("state", p.state), arg("out", p.out));
    // A C caller may pass any int as the type; C++ can only say so with a cast.
    case Entry::quantize:
        return fst_quantize_row(static_cast<fst_type>(p.row_type), static_cast<const float *>(raw("src", p.floats)),
                                raw("dst", p.blocks), p.row_n);
    case Entry::dequantize:
        return fst_dequantize_row(static_cast<fst_type>(p.row_type), raw("src", p.blocks),
                                  static_cast<float *>(raw("dst", p.floats)), p.row_n);
    }
    return FST_OK;
}

Snapshot snapshot(Problem &p) {
    Snapshot s;
    for (auto &[name, b] : p.buffers()) s.storages.push_back(b->storage);
    return s;
}

} // namespace fst_test
