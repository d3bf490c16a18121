// Checks an installed flashstate from the outside: the header and the loaded library agree on the version,
// one attention call gives a result known in closed form, and a bad call throws flashstate::Error.
#include <flashstate/flashstate.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main() {
    if (flashstate::version() != FLASHSTATE_VERSION_STRING) {
        std::printf("header %s but library %s\n", FLASHSTATE_VERSION_STRING, flashstate::version().c_str());
        return 1;
    }

    // Every key is the same row, so every key gets the same weight and the output is the mean of the values,
    // whatever q holds: value row j is (j + c / 4)_c, so the mean of 4 rows is 1.5 + c / 4.
    const int D = 32, n_kv = 4, n_head = 2;
    std::vector<float> q(D * n_head), k(D * n_kv, 0.5f), v(D * n_kv);
    for (int i = 0; i < D * n_head; ++i) q[i] = float(i % 7) - 3.0f;
    for (int j = 0; j < n_kv; ++j)
        for (int c = 0; c < D; ++c) v[j * D + c] = float(j) + float(c) / 4.0f;
    std::vector<float> state(2 * n_head), out(D * n_head);

    fst_tensor qt = flashstate::View::f32(q.data(), D, 1, n_head);
    fst_tensor kt = flashstate::View::f32(k.data(), D, n_kv, 1);
    fst_tensor vt = flashstate::View::f32(v.data(), D, n_kv, 1);
    fst_tensor st = flashstate::View::state(state.data(), n_head, 1);
    fst_tensor ot = flashstate::View::out(out.data(), D, n_head, 1);
    const flashstate::Params params = flashstate::Params().scale(1.0f / std::sqrt(float(D)));
    try {
        flashstate::state_init(st, ot);
        flashstate::attn_with_state(params, qt, kt, vt, st, ot);
    } catch (const flashstate::Error &e) {
        std::printf("unexpected error: %s\n", e.what());
        return 1;
    }
    for (int h = 0; h < n_head; ++h)
        for (int c = 0; c < D; ++c) {
            const float expected = 1.5f + float(c) / 4.0f;
            if (!(std::fabs(out[h * D + c] - expected) <= 1e-5f * expected)) {
                std::printf("out[%d, head %d] = %.8f, expected %.8f\n", c, h, out[h * D + c], expected);
                return 1;
            }
        }

    // K with the wrong D: must throw, with the library's message, and leave out untouched.
    fst_tensor k_short = flashstate::View::f32(k.data(), D / 2, n_kv, 1);
    const std::vector<float> out_before = out;
    try {
        flashstate::attn_with_state(params, qt, k_short, vt, st, ot);
        std::printf("a bad k was accepted\n");
        return 1;
    } catch (const flashstate::Error &e) {
        if (e.status() != FST_ERR_INVALID_ARGUMENT || std::string(e.what()).empty() || out != out_before) {
            std::printf("bad k: status %s, message '%s'\n", fst_status_name(e.status()), e.what());
            return 1;
        }
        std::printf("flashstate %s found and working; a bad call reports: %s\n", flashstate::version().c_str(),
                    e.what());
    }
    return 0;
}
