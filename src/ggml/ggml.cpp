// The ggml adapter: ggml tensors as flashstate views, and flash_attn_ext with state as a ggml custom op whose
// callback runs fst_attn_with_state_part for ggml's ith of nth.
#include <flashstate/ggml.h>

#include "attention/validate.h"
#include "common/error.h"
#include "state/state.h"

#include <ggml.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

// fst_type is defined with ggml_type's values, so a type converts by value.
static_assert(int(FST_TYPE_F32) == GGML_TYPE_F32 && int(FST_TYPE_F16) == GGML_TYPE_F16);
static_assert(int(FST_TYPE_Q4_0) == GGML_TYPE_Q4_0 && int(FST_TYPE_Q8_0) == GGML_TYPE_Q8_0);
static_assert(int(FST_TYPE_I32) == GGML_TYPE_I32 && int(FST_TYPE_BF16) == GGML_TYPE_BF16);

namespace {

bool type_supported(ggml_type t) {
    return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || t == GGML_TYPE_Q8_0 ||
           t == GGML_TYPE_Q4_0 || t == GGML_TYPE_I32;
}

// Throws (FST_ERR_INVALID_ARGUMENT for NULL, FST_ERR_UNSUPPORTED for a type flashstate does not read).
void check_tensor(const std::string &name, const ggml_tensor *t) {
    if (t == nullptr) fst::fail(name, "pointer", "NULL", "a ggml tensor");
    if (!type_supported(t->type))
        fst::fail(name, "type", std::string(ggml_type_name(t->type)) + " (ggml type " + std::to_string(int(t->type)) + ")",
                  "one of f32, f16, bf16, q8_0, q4_0 (i32 for positions)", FST_ERR_UNSUPPORTED);
}

fst_tensor view_of(const ggml_tensor *t) {
    fst_tensor v{};
    v.type = fst_type(t->type);
    for (int i = 0; i < 4; ++i) {
        v.ne[i] = t->ne[i];
        v.nb[i] = t->nb[i];
    }
    v.data = t->data;
    return v;
}

// Views for checking a node's arguments while the graph is built, when memory may not exist yet (no_alloc
// contexts). Each allocation (a view's view_src, or the tensor itself) gets a stand-in address range of its own and
// a view keeps its offset in it, so extents, strides, offsets and overlaps between views of one allocation are
// checked as they will be at compute time. Stand-ins are never dereferenced.
class StandIns {
public:
    fst_tensor view(const char *name, const ggml_tensor *t) {
        check_tensor(name, t);
        const ggml_tensor *root = t->view_src != nullptr ? t->view_src : t;
        fst_tensor v = view_of(t);
        v.data = reinterpret_cast<void *>(base_of(root) + (t->view_src != nullptr ? t->view_offs : 0));
        return v;
    }

private:
    uintptr_t base_of(const ggml_tensor *root) {
        for (const auto &[tensor, base] : bases_)
            if (tensor == root) return base;
        const uintptr_t base = next_;
        next_ += (ggml_nbytes(root) / kGap + 2) * kGap; // a gap after each, so neighbours never touch
        bases_.emplace_back(root, base);
        return base;
    }
    static constexpr uintptr_t kGap = 4096;
    uintptr_t next_ = kGap;
    std::vector<std::pair<const ggml_tensor *, uintptr_t>> bases_;
};

// scale, max_bias, softcap live at the end of the node's op_params; ggml's custom-op parameters (function,
// n_tasks, userdata) occupy the start.
struct Scalars {
    float scale, max_bias, softcap;
};
constexpr size_t kScalarsOffset = GGML_MAX_OP_PARAMS - sizeof(Scalars);
static_assert(kScalarsOffset >= 3 * sizeof(void *), "no room for the scalars after ggml's custom-op parameters");

fst_attn_params params_of(const Scalars &s) {
    fst_attn_params p = fst_attn_default_params();
    p.scale = s.scale;
    p.max_bias = s.max_bias;
    p.softcap = s.softcap;
    return p;
}

// The node's sources, in ggml_custom_inplace's order: src[0] = out, then the args.
enum Src { kOut = 0, kQ, kK, kV, kMask, kSinks, kState, kSrcCount };
constexpr int kArgs = kSrcCount - 1;

void attend(ggml_tensor *dst, int ith, int nth, void *) {
    Scalars s;
    std::memcpy(&s, reinterpret_cast<const char *>(dst->op_params) + kScalarsOffset, sizeof s);
    const fst_attn_params p = params_of(s);
    const fst_tensor q = view_of(dst->src[kQ]), k = view_of(dst->src[kK]), v = view_of(dst->src[kV]);
    fst_tensor mask{}, sinks{};
    if (dst->src[kMask] != nullptr) mask = view_of(dst->src[kMask]);
    if (dst->src[kSinks] != nullptr) sinks = view_of(dst->src[kSinks]);
    fst_tensor state = view_of(dst->src[kState]), out = view_of(dst); // dst is a view of out: the same memory
    const fst_status st = fst_attn_with_state_part(&p, &q, &k, &v, dst->src[kMask] ? &mask : nullptr,
                                                   dst->src[kSinks] ? &sinks : nullptr, &state, &out, ith, nth);
    if (st != FST_OK) GGML_ABORT("flashstate: %s", fst_last_error());
}

void init_state(ggml_tensor *dst, int, int, void *) {
    fst_tensor state = view_of(dst->src[1]), out = view_of(dst);
    if (fst_state_init(&state, &out) != FST_OK) GGML_ABORT("flashstate: %s", fst_last_error());
}

} // namespace

extern "C" fst_status fst_ggml_tensor(const ggml_tensor *t, fst_tensor *view) {
    return fst::guard("fst_ggml_tensor", [&] {
        if (view == nullptr) fst::fail("view", "pointer", "NULL", "an fst_tensor to fill");
        check_tensor(t != nullptr && t->name[0] != '\0' ? t->name : "tensor", t);
        *view = view_of(t);
    });
}

extern "C" ggml_tensor *fst_ggml_state_init(ggml_context *ctx, ggml_tensor *state, ggml_tensor *out) {
    ggml_tensor *node = nullptr;
    fst::guard("fst_ggml_state_init", [&] {
        if (ctx == nullptr) fst::fail("ctx", "pointer", "NULL", "a ggml context");
        StandIns stand_ins;
        const fst_tensor s = stand_ins.view("state", state), o = stand_ins.view("out", out);
        fst::check_state_pair(&s, &o);
        ggml_tensor *args[1] = {state};
        node = ggml_custom_inplace(ctx, out, args, 1, init_state, 1, nullptr);
        ggml_set_name(node, "fst_state_init");
    });
    return node;
}

extern "C" ggml_tensor *fst_ggml_flash_attn_ext_with_state(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k,
                                                           ggml_tensor *v, ggml_tensor *mask, ggml_tensor *sinks,
                                                           ggml_tensor *state, ggml_tensor *out, float scale,
                                                           float max_bias, float softcap) {
    ggml_tensor *node = nullptr;
    fst::guard("fst_ggml_flash_attn_ext_with_state", [&] {
        if (ctx == nullptr) fst::fail("ctx", "pointer", "NULL", "a ggml context");
        // The same validation as the call the callback makes, on stand-in addresses.
        StandIns stand_ins;
        const fst_tensor qv = stand_ins.view("q", q), kv = stand_ins.view("k", k), vv = stand_ins.view("v", v);
        const fst_tensor sv = stand_ins.view("state", state), ov = stand_ins.view("out", out);
        fst_tensor mv{}, snv{};
        if (mask != nullptr) mv = stand_ins.view("mask", mask);
        if (sinks != nullptr) snv = stand_ins.view("sinks", sinks);
        const Scalars scalars{scale, max_bias, softcap};
        const fst_attn_params p = params_of(scalars);
        const fst_segment segment{&kv, &vv, mask != nullptr ? &mv : nullptr, 0, nullptr};
        fst::AttnProblem problem;
        fst::validate_attention(problem, &p, &qv, &segment, 1, sinks != nullptr ? &snv : nullptr, &sv, &ov);

        ggml_tensor *args[kArgs] = {q, k, v, mask, sinks, state};
        node = ggml_custom_inplace(ctx, out, args, kArgs, attend, GGML_N_TASKS_MAX, nullptr);
        std::memcpy(reinterpret_cast<char *>(node->op_params) + kScalarsOffset, &scalars, sizeof scalars);
        ggml_set_name(node, "fst_flash_attn_ext_with_state");
    });
    return node;
}
