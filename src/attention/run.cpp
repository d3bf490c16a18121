// fst_attn_with_state: validate → plan → per tile: kernels over chunks, merged in a fixed pairwise tree → ⊕ into
// the caller's (state, out) → sinks. After validation and allocation nothing can fail, so a call writes its whole
// result or nothing.
#include "attention/plan.h"
#include "attention/validate.h"
#include "common/error.h"
#include "state/merge.h"
#include "state/merge_tree.h"
#include "tensor/types.h"
#include "threads/parallel_for.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace fst {

namespace {

int32_t load_i32(const unsigned char *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// What the bias of one query row needs: its position, its mask row and its ALiBi slope.
struct RowBias {
    int64_t q_pos = 0;
    const unsigned char *mask_row = nullptr;
    const unsigned char *kv_pos_col = nullptr; // this row's sequence's column of kv_pos, or nullptr
    float slope = 1.0f;
};

RowBias row_bias(const AttnProblem &P, const RowCoord &c) {
    RowBias b;
    const fst_attn_params &p = P.params;
    b.q_pos = P.has_q_pos ? load_i32(static_cast<const unsigned char *>(P.q_pos.data) + size_t(c.r) * P.q_pos.nb[0] +
                                     size_t(c.s % P.q_pos.ne[1]) * P.q_pos.nb[1])
                          : p.q_pos0 + c.r;
    if (P.has_kv_pos)
        b.kv_pos_col = static_cast<const unsigned char *>(P.kv_pos.data) + size_t(c.s % P.kv_pos.ne[1]) * P.kv_pos.nb[1];
    if (P.has_mask) b.mask_row = at(P.mask, c.r, c.h % P.mask.ne[2], c.s % P.mask.ne[3]);
    b.slope = alibi_slope(p.max_bias, P.n_head, c.h);
    return b;
}

// bias[j] for keys [j0, j0 + n): -inf where the virtual mask hides the key, plus slope * mask.
void fill_bias(const AttnProblem &P, const RowBias &b, int64_t j0, int64_t n, float *bias) {
    const fst_attn_params &p = P.params;
    for (int64_t j = 0; j < n; ++j) {
        float x = 0.0f;
        if (p.virtual_mask != FST_MASK_NONE) {
            const int64_t kpos = b.kv_pos_col ? load_i32(b.kv_pos_col + size_t(j0 + j) * P.kv_pos.nb[0]) : p.kv_pos0 + j0 + j;
            const bool hidden = kpos > b.q_pos || (p.virtual_mask == FST_MASK_SLIDING_WINDOW && b.q_pos - kpos >= p.window);
            if (hidden) {
                bias[j] = kNegInf;
                continue;
            }
        }
        if (b.mask_row) {
            const unsigned char *e = b.mask_row + size_t(j0 + j) * P.mask.nb[0];
            float mv;
            if (P.mask.type == FST_TYPE_F16) mv = f16_to_f32(load_u16(e));
            else std::memcpy(&mv, e, 4);
            x = mv == kNegInf ? kNegInf : b.slope * mv;
        }
        bias[j] = x;
    }
}

void run_tile(const AttnProblem &P, const Plan &plan, const Tile &tile, float *scratch) {
    const int64_t T = Plan::kTileRows, C = kernels::kChunkKeys, n = tile.n_rows;
    const size_t slot = size_t(P.DV + 2);
    float *qf = scratch;
    float *bias = qf + T * P.D;
    float *m = bias + T * C;
    float *s = m + T;
    float *acc = s + T;
    float *trees = acc + T * P.DV;
    float *kernel_scratch = trees + size_t(T) * size_t(plan.tree_levels + 1) * slot;

    RowCoord coords[Plan::kTileRows];
    RowBias biases[Plan::kTileRows];
    for (int64_t i = 0; i < n; ++i) {
        coords[i] = plan.row(tile, i);
        row_to_f32(P.q.type, at(P.q, coords[i].r, coords[i].h, coords[i].s), qf + i * P.D, P.D);
        if (plan.needs_bias) biases[i] = row_bias(P, coords[i]);
    }
    MergeTree tree_of_row[Plan::kTileRows]; // no allocation here: this runs on worker threads after validation
    for (int64_t i = 0; i < n; ++i)
        tree_of_row[i] = MergeTree(trees + size_t(i) * size_t(plan.tree_levels + 1) * slot, plan.tree_levels, P.DV);

    kernels::ChunkArgs a;
    a.D = P.D;
    a.DV = P.DV;
    a.scale = P.params.scale;
    a.softcap = P.params.softcap;
    a.k_type = P.k.type;
    a.v_type = P.v.type;
    a.k_stride = P.k.nb[1];
    a.v_stride = P.v.nb[1];
    a.n_rows = n;
    a.q = qf;
    a.bias_stride = C;
    a.m = m;
    a.s = s;
    a.acc = acc;
    a.scratch = kernel_scratch;
    for (int64_t c = 0; c < plan.n_chunks; ++c) {
        const int64_t j0 = c * C, nk = std::min(C, P.n_kv - j0);
        a.k = at(P.k, j0, tile.hk, tile.sk);
        a.v = at(P.v, j0, tile.hk, tile.sk);
        a.n_keys = nk;
        a.bias = nullptr;
        bool any_visible = true;
        if (plan.needs_bias) {
            any_visible = false;
            for (int64_t i = 0; i < n; ++i) {
                fill_bias(P, biases[i], j0, nk, bias + i * C);
                for (int64_t j = 0; j < nk && !any_visible; ++j) any_visible = bias[i * C + j] != kNegInf;
            }
            a.bias = bias;
        }
        if (any_visible) plan.kernels->attend_chunk(a);
        for (int64_t i = 0; i < n; ++i) {
            float *in = tree_of_row[i].incoming();
            const bool empty = !any_visible || s[i] == 0.0f;
            in[0] = empty ? kNegInf : m[i];
            in[1] = empty ? 0.0f : s[i];
            const float inv = empty ? 0.0f : 1.0f / s[i];
            for (int64_t d = 0; d < P.DV; ++d) in[2 + d] = empty ? 0.0f : acc[i * P.DV + d] * inv;
            tree_of_row[i].push();
        }
    }

    // The segment's result per row, then ⊕ into the caller's state, then the sinks (once, in this call).
    float *seg = acc; // reuse: one row at a time
    for (int64_t i = 0; i < n; ++i) {
        const RowCoord &rc = coords[i];
        float seg_m, seg_s;
        tree_of_row[i].result(seg_m, seg_s, seg);
        float *ms = state_row(P.state, rc.h, rc.r, rc.s);
        float *o = out_row(P.out, rc.h, rc.r, rc.s);
        merge_state(ms[0], ms[1], o, seg_m, seg_s, seg, P.DV);
        if (P.has_sinks) {
            const float sink = *reinterpret_cast<const float *>(static_cast<const unsigned char *>(P.sinks.data) +
                                                                size_t(rc.h) * P.sinks.nb[0]);
            merge_state(ms[0], ms[1], o, sink, 1.0f, nullptr, P.DV);
        }
    }
}

} // namespace

} // namespace fst

using namespace fst;

extern "C" {

fst_attn_params fst_attn_default_params(void) {
    fst_attn_params p;
    std::memset(&p, 0, sizeof p);
    p.scale = 1.0f;
    p.max_bias = 0.0f;
    p.softcap = 0.0f;
    p.virtual_mask = FST_MASK_NONE;
    p.window = 0;
    p.q_pos0 = 0;
    p.kv_pos0 = 0;
    p.q_pos = nullptr;
    p.kv_pos = nullptr;
    p.n_threads = 0;
    p.isa = FST_ISA_AUTO;
    p.precision = FST_PRECISION_EXACT;
    return p;
}

fst_status fst_attn_with_state(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k, const fst_tensor *v,
                               const fst_tensor *mask, const fst_tensor *sinks, fst_tensor *state, fst_tensor *out) {
    return guard("fst_attn_with_state", [&] {
        const AttnProblem P = validate_attention(p, q, k, v, mask, sinks, state, out);
        const Plan plan = make_plan(P);
        // Everything that can fail (allocation) happens before the first write.
        std::vector<std::vector<float>> scratch(size_t(plan.n_workers));
        for (auto &buf : scratch) buf.resize(plan.scratch_floats);
        parallel_for(plan.tiles.size(), plan.n_workers,
                     [&](size_t t, int worker) { run_tile(P, plan, plan.tiles[t], scratch[size_t(worker)].data()); });
    });
}

} // extern "C"
