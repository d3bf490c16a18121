// Thread safety. The contract, as include/flashstate/flashstate.h states it: "every function may be called from any
// number of threads at once, provided that no two calls write the same state/out memory. fst_last_error() is per
// thread." Inputs (q, k, v, mask, sinks, positions, other_state, lse, ...) may be shared between concurrent calls.
// And SPEC section 4: results do not depend on the thread count. So these tests check that
//   - many threads calling attention, merge, sinks and LSE at once, on shared inputs and their own outputs, get the
//     bits that the same calls give one after another on one thread;
//   - n_threads 1, 2, 3, 8 (and 0) give the same bits, and so do the ith/nth parts run on the caller's own threads;
//   - fst_last_error() is per thread: concurrent failures each see their own message, which stays valid until that
//     thread's next call, whatever other threads do.
// Correctness itself is anchored on the double-precision reference (tests/reference). scripts/sanitize.sh runs
// these tests (suite Threads) under ThreadSanitizer; ctest runs each test in its own process, so
// FirstCallsOfTheProcessFromManyThreads really makes the process's first calls concurrently.
#include "reference/reference.h"
#include "support/buffer.h"
#include "support/cases.h"

#include <flashstate/flashstate.h>

#include <gtest/gtest.h>

#include <array>
#include <barrier>
#include <cstring>
#include <latch>
#include <string>
#include <thread>
#include <vector>

namespace {

using fst_test::Buffer;
using fst_test::Problem;
using fst_test::Segment;
using fst_test::Spec;

constexpr int kThreads = 8;

// A problem with several 1024-key chunks, GQA, broadcast sequences, mixed K/V types, a mask with hidden keys,
// sinks, softcap and a causal virtual mask: every path a call can take in parallel.
Spec threaded_spec() {
    Spec s;
    s.D = 64;
    s.DV = 64;
    s.n_q = 9; // 4 heads per KV head x 9 rows = 36 rows per group: two tiles per group
    s.n_kv = 2600;
    s.n_head = 8;
    s.n_head_kv = 2;
    s.n_seq = 2;
    s.n_seq_kv = 1;
    s.q_type = FST_TYPE_F32;
    s.k_type = FST_TYPE_F16;
    s.v_type = FST_TYPE_Q8_0;
    s.padded = true;
    s.has_mask = true;
    s.mask_type = FST_TYPE_F16;
    s.mask_inf_fraction = 0.2;
    s.softcap = 30;
    s.has_sinks = true;
    s.virtual_mask = FST_MASK_CAUSAL;
    s.q_pos0 = s.n_kv - s.n_q;
    s.logit_max = 20;
    return s;
}

// Everything one job leaves behind, as bytes.
struct Outputs {
    std::vector<unsigned char> sequential_state, sequential_out; // segment after segment, sinks with the last
    std::vector<unsigned char> merged_state, merged_out;         // segments separately, then merge and add_sinks
    std::vector<unsigned char> lse, imported_state, imported_out; // export of the merged state, imported again
    bool operator==(const Outputs &) const = default;
};

std::vector<unsigned char> bytes_of(const Buffer &b) { return b.storage; }

// One job: split the KV range at `cut`, compute the result sequentially and in parallel form (merge + sinks),
// export the LSE and import it into a fresh pair. Every output is the job's own; the problem is shared.
// Returns false (and a message) if any call fails.
bool run_job(const Problem &P, int64_t cut, int32_t n_threads, fst_isa isa, Outputs &o, std::string &error) {
    auto check = [&](fst_status st, const char *what) {
        if (st != FST_OK && error.empty()) error = std::string(what) + ": " + fst_last_error();
        return st == FST_OK;
    };
    const fst_tensor q = P.q();
    const Segment a = P.segment(0, cut), b = P.segment(cut, P.spec.n_kv - cut);
    fst_attn_params pa = a.params(), pb = b.params();
    pa.n_threads = pb.n_threads = n_threads;
    pa.isa = pb.isa = isa;

    Buffer state = P.make_state(), out = P.make_out();
    bool ok = check(fst_state_init(&state.t, &out.t), "init");
    ok = ok && check(fst_attn_with_state(&pa, &q, &a.k, &a.v, a.mask_ptr(), nullptr, &state.t, &out.t), "segment a");
    ok = ok && check(fst_attn_with_state(&pb, &q, &b.k, &b.v, b.mask_ptr(), P.sinks(), &state.t, &out.t), "segment b");

    Buffer state_a = P.make_state(), out_a = P.make_out(), state_b = P.make_state(), out_b = P.make_out();
    ok = ok && check(fst_state_init(&state_a.t, &out_a.t), "init a");
    ok = ok && check(fst_state_init(&state_b.t, &out_b.t), "init b");
    ok = ok && check(fst_attn_with_state(&pb, &q, &b.k, &b.v, b.mask_ptr(), nullptr, &state_b.t, &out_b.t), "b alone");
    ok = ok && check(fst_attn_with_state(&pa, &q, &a.k, &a.v, a.mask_ptr(), nullptr, &state_a.t, &out_a.t), "a alone");
    ok = ok && check(fst_state_merge(&state_a.t, &out_a.t, &state_b.t, &out_b.t), "merge");
    ok = ok && check(fst_state_add_sinks(P.sinks(), &state_a.t, &out_a.t), "add_sinks");

    Buffer lse(FST_TYPE_F32, {P.spec.n_head, P.spec.n_q, P.spec.n_seq, 1});
    Buffer imported_state = P.make_state(), imported_out = out_a;
    ok = ok && check(fst_state_export_lse(&state_a.t, 2.0f, &lse.t), "export");
    ok = ok && check(fst_state_import_lse(&lse.t, 2.0f, &imported_state.t, &imported_out.t), "import");

    o = Outputs{bytes_of(state), bytes_of(out), bytes_of(state_a), bytes_of(out_a), bytes_of(lse),
                bytes_of(imported_state), bytes_of(imported_out)};
    return ok;
}

// The job of thread i: its own split point, thread count and ISA bound.
int64_t cut_of(int i, int64_t n_kv) { return (n_kv * (i + 1)) / (kThreads + 1) + i; }
int32_t threads_of(int i) { return std::array<int32_t, 4>{1, 2, 3, 8}[size_t(i % 4)]; }
fst_isa isa_of(int i) { return i % 2 ? FST_ISA_AUTO : FST_ISA_PORTABLE; }

TEST(Threads, ConcurrentCallsMatchSerialCalls) {
    const Problem P(threaded_spec(), 7);
    const ref::Result expected = P.reference(true);

    // Serial: every job once, one after another on this thread.
    std::vector<Outputs> serial(kThreads);
    for (int i = 0; i < kThreads; ++i) {
        std::string error;
        ASSERT_TRUE(run_job(P, cut_of(i, P.spec.n_kv), threads_of(i), isa_of(i), serial[size_t(i)], error)) << error;
        // The results are right, not merely repeatable.
        Buffer out = P.make_out();
        out.storage = serial[size_t(i)].sequential_out;
        EXPECT_LE(ref::rel_error(expected, out.t), 1e-5) << "job " << i;
        out.storage = serial[size_t(i)].merged_out;
        EXPECT_LE(ref::rel_error(expected, out.t), 1e-5) << "job " << i;
    }

    // Concurrent: all jobs at once, started together, three rounds each.
    constexpr int kRounds = 3;
    std::vector<std::vector<Outputs>> got(kThreads, std::vector<Outputs>(kRounds));
    std::vector<std::string> errors(kThreads);
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            for (int round = 0; round < kRounds; ++round)
                if (!run_job(P, cut_of(i, P.spec.n_kv), threads_of(i), isa_of(i), got[size_t(i)][size_t(round)],
                             errors[size_t(i)]))
                    return;
        });
    for (auto &t : threads) t.join();

    for (int i = 0; i < kThreads; ++i) {
        ASSERT_TRUE(errors[size_t(i)].empty()) << "thread " << i << ": " << errors[size_t(i)];
        for (int round = 0; round < kRounds; ++round)
            EXPECT_TRUE(got[size_t(i)][size_t(round)] == serial[size_t(i)]) << "thread " << i << ", round " << round;
    }
}

TEST(Threads, FirstCallsOfTheProcessFromManyThreads) {
    // Nothing in this process has called attention yet: the thread pool and the kernel dispatch are created by
    // these concurrent calls. The serial results are computed afterwards.
    const Problem P(threaded_spec(), 11);
    std::vector<Outputs> got(kThreads);
    std::vector<std::string> errors(kThreads);
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            run_job(P, cut_of(i, P.spec.n_kv), 8, FST_ISA_AUTO, got[size_t(i)], errors[size_t(i)]);
        });
    for (auto &t : threads) t.join();

    for (int i = 0; i < kThreads; ++i) {
        ASSERT_TRUE(errors[size_t(i)].empty()) << "thread " << i << ": " << errors[size_t(i)];
        Outputs serial;
        std::string error;
        ASSERT_TRUE(run_job(P, cut_of(i, P.spec.n_kv), 1, FST_ISA_AUTO, serial, error)) << error;
        EXPECT_TRUE(got[size_t(i)] == serial) << "thread " << i;
    }
}

TEST(Threads, ThreadCountNeverChangesABit) {
    const Problem P(threaded_spec(), 13);
    const fst_tensor q = P.q(), k = P.k(), v = P.v();
    const ref::Result expected = P.reference(true);

    auto run = [&](int32_t n_threads, Buffer &state, Buffer &out) {
        fst_attn_params p = P.params();
        p.n_threads = n_threads;
        ASSERT_EQ(fst_state_init(&state.t, &out.t), FST_OK);
        ASSERT_EQ(fst_attn_with_state(&p, &q, &k, &v, P.mask(), P.sinks(), &state.t, &out.t), FST_OK)
            << fst_last_error();
    };
    Buffer state1 = P.make_state(), out1 = P.make_out();
    run(1, state1, out1);
    EXPECT_LE(ref::rel_error(expected, out1.t), 1e-5);
    for (int32_t n : {2, 3, 8, 0}) {
        Buffer state = P.make_state(), out = P.make_out();
        run(n, state, out);
        EXPECT_EQ(state.storage, state1.storage) << "n_threads = " << n;
        EXPECT_EQ(out.storage, out1.storage) << "n_threads = " << n;
    }
}

TEST(Threads, PartsOnTheCallersThreadsMatchTheWholeCall) {
    // fst_attn_with_state_part is for a host's own thread pool: nth threads each run part ith, at the same time,
    // into the same state/out (the parts write disjoint rows).
    const Problem P(threaded_spec(), 17);
    const fst_tensor q = P.q(), k = P.k(), v = P.v();
    fst_attn_params p = P.params();
    Buffer whole_state = P.make_state(), whole_out = P.make_out();
    ASSERT_EQ(fst_state_init(&whole_state.t, &whole_out.t), FST_OK);
    ASSERT_EQ(fst_attn_with_state(&p, &q, &k, &v, P.mask(), P.sinks(), &whole_state.t, &whole_out.t), FST_OK)
        << fst_last_error();
    EXPECT_LE(ref::rel_error(P.reference(true), whole_out.t), 1e-5);

    for (int nth : {1, 2, 3, 8}) {
        Buffer state = P.make_state(), out = P.make_out();
        ASSERT_EQ(fst_state_init(&state.t, &out.t), FST_OK);
        std::vector<fst_status> status(size_t(nth), FST_ERR_INVALID_ARGUMENT);
        std::latch start(nth);
        std::vector<std::thread> threads;
        for (int ith = 0; ith < nth; ++ith)
            threads.emplace_back([&, ith] {
                start.arrive_and_wait();
                status[size_t(ith)] =
                    fst_attn_with_state_part(&p, &q, &k, &v, P.mask(), P.sinks(), &state.t, &out.t, ith, nth);
            });
        for (auto &t : threads) t.join();
        for (int ith = 0; ith < nth; ++ith) ASSERT_EQ(status[size_t(ith)], FST_OK) << ith << "/" << nth;
        EXPECT_EQ(state.storage, whole_state.storage) << "nth = " << nth;
        EXPECT_EQ(out.storage, whole_out.storage) << "nth = " << nth;
    }
}

// State and out packed in one buffer, each query row's M, S and O side by side (docs/API.md: outputs may interleave
// when no byte is shared). Rows of different KV heads are different tiles, so threads write neighbouring bytes at
// once; under ThreadSanitizer that must not be a race, and the bits must be those of separate buffers.
TEST(Threads, PackedStateAndOutRowsWrittenByManyThreads) {
    const Problem P(threaded_spec(), 19);
    const Spec &s = P.spec;
    const fst_tensor q = P.q(), k = P.k(), v = P.v();
    fst_attn_params p = P.params();
    Buffer want_state = P.make_state(), want_out = P.make_out();
    p.n_threads = 1;
    ASSERT_EQ(fst_state_init(&want_state.t, &want_out.t), FST_OK);
    ASSERT_EQ(fst_attn_with_state(&p, &q, &k, &v, P.mask(), P.sinks(), &want_state.t, &want_out.t), FST_OK);

    auto check = [&](Buffer &packed, const char *what) {
        for (int64_t sq = 0; sq < s.n_seq; ++sq)
            for (int64_t r = 0; r < s.n_q; ++r)
                for (int64_t h = 0; h < s.n_head; ++h) {
                    ASSERT_EQ(std::memcmp(packed.f32(0, h, r, sq), want_state.f32(0, h, r, sq), 8), 0) << what;
                    ASSERT_EQ(std::memcmp(packed.f32(2, h, r, sq), want_out.f32(0, h, r, sq), size_t(s.DV) * 4), 0) << what;
                }
    };
    auto packed_views = [&](Buffer &packed, fst_tensor &state, fst_tensor &out) {
        state = out = packed.t;
        state.ne[0] = 2;
        out.ne[0] = s.DV;
        out.data = packed.f32(2);
        ASSERT_EQ(fst_state_init(&state, &out), FST_OK) << fst_last_error();
    };
    for (int32_t n : {2, 8}) {
        Buffer packed(FST_TYPE_F32, {2 + s.DV, s.n_head, s.n_q, s.n_seq});
        fst_tensor state, out;
        packed_views(packed, state, out);
        p.n_threads = n;
        ASSERT_EQ(fst_attn_with_state(&p, &q, &k, &v, P.mask(), P.sinks(), &state, &out), FST_OK) << fst_last_error();
        check(packed, n == 2 ? "n_threads 2" : "n_threads 8");
    }
    // The ith/nth parts on the caller's threads, all at once.
    constexpr int nth = 3;
    Buffer packed(FST_TYPE_F32, {2 + s.DV, s.n_head, s.n_q, s.n_seq});
    fst_tensor state, out;
    packed_views(packed, state, out);
    std::vector<fst_status> status(nth, FST_ERR_INVALID_ARGUMENT);
    std::latch start(nth);
    std::vector<std::thread> threads;
    for (int ith = 0; ith < nth; ++ith)
        threads.emplace_back([&, ith] {
            start.arrive_and_wait();
            status[size_t(ith)] = fst_attn_with_state_part(&p, &q, &k, &v, P.mask(), P.sinks(), &state, &out, ith, nth);
        });
    for (auto &t : threads) t.join();
    for (int ith = 0; ith < nth; ++ith) ASSERT_EQ(status[size_t(ith)], FST_OK) << ith;
    check(packed, "3 parts");
}

TEST(Threads, LastErrorIsPerThread) {
    // This thread's own failure, before the others start; nothing they do may change what it sees.
    EXPECT_NE(fst_quantize_row(FST_TYPE_Q8_0, nullptr, nullptr, 31), FST_OK);
    const std::string main_message = fst_last_error();
    ASSERT_EQ(main_message.rfind("fst_quantize_row: ", 0), 0u) << main_message;

    auto fail_a = [](float base) { // base must be 2 or e
        Buffer state(FST_TYPE_F32, {2, 1, 1, 1}), lse(FST_TYPE_F32, {1, 1, 1, 1});
        return fst_state_export_lse(&state.t, base, &lse.t);
    };
    auto fail_b = [](int64_t n) { // Q4_0 rows are whole blocks of 32
        float x[32] = {};
        unsigned char dst[64];
        return fst_quantize_row(FST_TYPE_Q4_0, x, dst, n);
    };

    // Threads a and b fail at the same moment; then b fails again while a only reads; then a fails again while b
    // only reads. Thread c never fails. Every step ends at the barrier, so the order is fixed.
    std::barrier sync(3);
    auto step = [&] { sync.arrive_and_wait(); };
    std::string a1, a1_after_b_failed, a2, b1, b2, b2_after_a_failed, c_seen;
    fst_status sa1 = FST_OK, sa2 = FST_OK, sb1 = FST_OK, sb2 = FST_OK;
    std::thread a([&] {
        step();
        sa1 = fail_a(3.0f);
        step();
        const char *mine = fst_last_error(); // valid until this thread's next call
        a1 = mine;
        step();
        step(); // b fails again in between
        a1_after_b_failed = mine;
        sa2 = fail_a(10.0f);
        a2 = fst_last_error();
        step();
    });
    std::thread b([&] {
        step();
        sb1 = fail_b(5);
        step();
        b1 = fst_last_error();
        step();
        sb2 = fail_b(7);
        const char *mine = fst_last_error();
        b2 = mine;
        step();
        step(); // a fails again in between
        b2_after_a_failed = mine;
    });
    std::thread c([&] {
        for (int i = 0; i < 5; ++i) step();
        c_seen = fst_last_error();
    });
    a.join();
    b.join();
    c.join();

    EXPECT_NE(sa1, FST_OK);
    EXPECT_NE(sa2, FST_OK);
    EXPECT_NE(sb1, FST_OK);
    EXPECT_NE(sb2, FST_OK);
    for (const std::string &m : {a1, a2}) {
        EXPECT_EQ(m.rfind("fst_state_export_lse: ", 0), 0u) << m;
        EXPECT_NE(m.find("base"), std::string::npos) << m;
    }
    EXPECT_NE(a1.find("= 3"), std::string::npos) << a1;
    EXPECT_NE(a2.find("= 10"), std::string::npos) << a2;
    for (const std::string &m : {b1, b2}) EXPECT_EQ(m.rfind("fst_quantize_row: ", 0), 0u) << m;
    EXPECT_NE(b1.find("= 5"), std::string::npos) << b1;
    EXPECT_NE(b2.find("= 7"), std::string::npos) << b2;
    EXPECT_EQ(a1_after_b_failed, a1);
    EXPECT_EQ(b2_after_a_failed, b2);
    EXPECT_EQ(c_seen, "");
    EXPECT_EQ(fst_last_error(), main_message);
}

} // namespace
