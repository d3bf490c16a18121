// The state algebra (SPEC section 2) on hand-made states: init, merge, sinks, and the LSE exchange in base 2 and
// base e. Expected values are computed here in double from the SPEC's formulas, never by the library.
#include "support/cases.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

using namespace fst_test;

namespace {

constexpr int64_t DV = 5, H = 3, NQ = 2, NS = 2;  // 12 rows of 5 values, padded between rows, heads, sequences
const float inf = std::numeric_limits<float>::infinity();
const float not_a_number = std::numeric_limits<float>::quiet_NaN();
const double ln2 = std::log(2.0);

struct Pair {
    Buffer state{FST_TYPE_F32, {2, H, NQ, NS}, {0, 4, 12, 8}};
    Buffer out{FST_TYPE_F32, {DV, H, NQ, NS}, {0, 8, 4, 12}};
    float &m(int64_t h, int64_t r, int64_t s) { return *state.f32(0, h, r, s); }
    float &sum(int64_t h, int64_t r, int64_t s) { return *state.f32(1, h, r, s); }
    float &o(int64_t c, int64_t h, int64_t r, int64_t s) { return *out.f32(c, h, r, s); }
};

void for_rows(const std::function<void(int64_t, int64_t, int64_t)> &f) {
    for (int64_t s = 0; s < NS; ++s)
        for (int64_t r = 0; r < NQ; ++r)
            for (int64_t h = 0; h < H; ++h) f(h, r, s);
}

// A state in double, as the SPEC writes it.
struct Row {
    double M = -INFINITY, S = 0;
    std::vector<double> O = std::vector<double>(DV, 0.0);
};

Row get(Pair &p, int64_t h, int64_t r, int64_t s) {
    Row row;
    row.M = p.m(h, r, s);
    row.S = p.sum(h, r, s);
    for (int64_t c = 0; c < DV; ++c) row.O[size_t(c)] = p.o(c, h, r, s);
    return row;
}

std::vector<Row> rows(Pair &p) {
    std::vector<Row> all;
    for_rows([&](int64_t h, int64_t r, int64_t s) { all.push_back(get(p, h, r, s)); });
    return all;
}

Row merged(const Row &a, const Row &b) {
    if (b.S == 0) return a;
    if (a.S == 0) return b;
    Row m;
    m.M = std::max(a.M, b.M);
    double wa = a.S * std::exp(a.M - m.M), wb = b.S * std::exp(b.M - m.M);
    m.S = wa + wb;
    for (size_t c = 0; c < size_t(DV); ++c) m.O[c] = (wa * a.O[c] + wb * b.O[c]) / m.S;
    return m;
}

// Random states: M in [-30, 30] (some rows with equal or far-apart maxima), S in [0.5, 20], O ~ N(0, 1); a share
// of the rows empty (M = -inf, S = 0, O = 0).
Pair random_pair(std::mt19937 &rng, double empty_share) {
    Pair p;
    std::uniform_real_distribution<float> um(-30, 30), us(0.5f, 20), u01(0, 1);
    std::normal_distribution<float> nd;
    for_rows([&](int64_t h, int64_t r, int64_t s) {
        bool empty = u01(rng) < empty_share;
        p.m(h, r, s) = empty ? -inf : (u01(rng) < 0.2f ? 1.5f : um(rng));
        p.sum(h, r, s) = empty ? 0 : us(rng);
        for (int64_t c = 0; c < DV; ++c) p.o(c, h, r, s) = empty ? 0 : nd(rng);
    });
    return p;
}

// got matches the expected rows: M, S (S relative to the row's own M), O; expected-empty rows must be S == 0 with
// a zero, NaN-free output.
void expect_rows(Pair &got, const std::vector<Row> &expected, double tol, const char *what) {
    size_t i = 0;
    for_rows([&](int64_t h, int64_t r, int64_t s) {
        const Row &e = expected[i++];
        Row g = get(got, h, r, s);
        if (e.S == 0) {
            EXPECT_EQ(g.S, 0.0) << what << ": row h" << h << " r" << r << " s" << s << " should be empty";
            for (double x : g.O) EXPECT_EQ(x, 0.0) << what << ": empty row h" << h << " r" << r << " s" << s;
            return;
        }
        EXPECT_NEAR(g.M, e.M, tol * std::max(1.0, std::fabs(e.M))) << what << ": M h" << h << " r" << r << " s" << s;
        EXPECT_NEAR(g.S * std::exp(g.M - e.M), e.S, tol * e.S) << what << ": S h" << h << " r" << r << " s" << s;
        double o_max = 1;
        for (double x : e.O) o_max = std::max(o_max, std::fabs(x));
        for (size_t c = 0; c < size_t(DV); ++c)
            EXPECT_NEAR(g.O[c], e.O[c], tol * o_max) << what << ": O[" << c << "] h" << h << " r" << r << " s" << s;
    });
}

// Every byte outside the views is still what it was.
void expect_padding_kept(const Buffer &now, const Buffer &before) {
    std::vector<bool> covered = covered_bytes(now);
    for (size_t b = 0; b < covered.size(); ++b) {
        if (!covered[b]) {
            ASSERT_EQ(now.storage[b], before.storage[b]) << "byte " << b << " outside the view was written";
        }
    }
}

fst_status merge(Pair &a, Pair &b) { return fst_state_merge(&a.state.t, &a.out.t, &b.state.t, &b.out.t); }

Buffer make_lse() { return Buffer(FST_TYPE_F32, {H, NQ, NS, 1}, {0, 4, 8, 0}); }
float &lse_at(Buffer &lse, int64_t h, int64_t r, int64_t s) { return *lse.f32(h, r, s); }

const float e_literal = 2.718281828f;

} // namespace

TEST(State, InitWritesTheEmptyStateInsideTheViewOnly) {
    Pair p;
    p.state.fill_bytes(0xAB);
    p.out.fill_bytes(0xAB);
    const Pair before = p;
    ASSERT_EQ(fst_state_init(&p.state.t, &p.out.t), FST_OK) << fst_last_error();
    for_rows([&](int64_t h, int64_t r, int64_t s) {
        EXPECT_TRUE(std::isinf(p.m(h, r, s)) && p.m(h, r, s) < 0);
        EXPECT_EQ(p.sum(h, r, s), 0.0f);
        for (int64_t c = 0; c < DV; ++c) EXPECT_EQ(p.o(c, h, r, s), 0.0f);
    });
    expect_padding_kept(p.state, before.state);
    expect_padding_kept(p.out, before.out);
}

TEST(State, EmptyStateIsTheIdentityOnBothSides) {
    std::mt19937 rng(1);
    Pair a = random_pair(rng, 0.25);
    const std::vector<Row> a_rows = rows(a);
    Pair empty;
    ASSERT_EQ(fst_state_init(&empty.state.t, &empty.out.t), FST_OK);

    Pair left = a;  // a ⊕= empty: a unchanged, to the byte
    ASSERT_EQ(merge(left, empty), FST_OK) << fst_last_error();
    EXPECT_EQ(left.state.storage, a.state.storage);
    EXPECT_EQ(left.out.storage, a.out.storage);

    Pair right = empty;  // empty ⊕= a: exactly a's values
    const Pair right_before = right;
    ASSERT_EQ(merge(right, a), FST_OK) << fst_last_error();
    expect_rows(right, a_rows, 0.0, "empty + a");
    expect_padding_kept(right.state, right_before.state);
    expect_padding_kept(right.out, right_before.out);
}

TEST(State, TwoEmptyStatesMergeToTheEmptyStateWithoutNaN) {
    Pair a, b;
    ASSERT_EQ(fst_state_init(&a.state.t, &a.out.t), FST_OK);
    ASSERT_EQ(fst_state_init(&b.state.t, &b.out.t), FST_OK);
    ASSERT_EQ(merge(a, b), FST_OK) << fst_last_error();
    for_rows([&](int64_t h, int64_t r, int64_t s) {
        EXPECT_EQ(a.sum(h, r, s), 0.0f);
        EXPECT_FALSE(std::isnan(a.m(h, r, s)));
        for (int64_t c = 0; c < DV; ++c) EXPECT_EQ(a.o(c, h, r, s), 0.0f);
    });
}

// S == 0 means empty whatever M holds: a finite sentinel, +inf or NaN is never used as a number.
TEST(State, ZeroSumIsEmptyWhateverTheMax) {
    std::mt19937 rng(2);
    Pair a = random_pair(rng, 0.25);
    const std::vector<Row> a_rows = rows(a);
    Pair sentinel;
    const float maxima[] = {-5e4f, inf, not_a_number, -inf};
    int i = 0;
    for_rows([&](int64_t h, int64_t r, int64_t s) {
        sentinel.m(h, r, s) = maxima[i++ % 4];
        sentinel.sum(h, r, s) = 0;
        for (int64_t c = 0; c < DV; ++c) sentinel.o(c, h, r, s) = 0;
    });

    Pair left = a;
    ASSERT_EQ(merge(left, sentinel), FST_OK) << fst_last_error();
    expect_rows(left, a_rows, 0.0, "a + sentinel");

    Pair right = sentinel;
    ASSERT_EQ(merge(right, a), FST_OK) << fst_last_error();
    expect_rows(right, a_rows, 0.0, "sentinel + a");

    Pair both = sentinel;
    ASSERT_EQ(merge(both, sentinel), FST_OK) << fst_last_error();
    expect_rows(both, std::vector<Row>(size_t(H * NQ * NS)), 0.0, "sentinel + sentinel");
}

TEST(State, MergeMatchesDoubleMath) {
    std::mt19937 rng(3);
    for (int trial = 0; trial < 20; ++trial) {
        Pair a = random_pair(rng, 0.15), b = random_pair(rng, 0.15);
        // Far-apart maxima: one side's weight underflows to 0 in float.
        a.m(0, 0, 0) = 60;
        b.m(0, 0, 0) = -60;
        a.m(1, 0, 0) = -80;
        b.m(1, 0, 0) = 40;
        std::vector<Row> ra = rows(a), rb = rows(b), expected;
        for (size_t i = 0; i < ra.size(); ++i) expected.push_back(merged(ra[i], rb[i]));
        const Pair before = a;
        ASSERT_EQ(merge(a, b), FST_OK) << fst_last_error();
        expect_rows(a, expected, 1e-6, "a + b");
        expect_padding_kept(a.state, before.state);
        expect_padding_kept(a.out, before.out);
    }
}

TEST(State, MergeIsCommutativeAndAssociative) {
    std::mt19937 rng(4);
    for (int trial = 0; trial < 20; ++trial) {
        Pair a = random_pair(rng, 0.2), b = random_pair(rng, 0.2), c = random_pair(rng, 0.2);
        Pair ab = a, ba = b;
        ASSERT_EQ(merge(ab, b), FST_OK);
        ASSERT_EQ(merge(ba, a), FST_OK);
        expect_rows(ba, rows(ab), 1e-6, "b + a vs a + b");

        Pair ab_c = ab, bc = b;
        ASSERT_EQ(merge(ab_c, c), FST_OK);
        ASSERT_EQ(merge(bc, c), FST_OK);
        Pair a_bc = a;
        ASSERT_EQ(merge(a_bc, bc), FST_OK);
        expect_rows(a_bc, rows(ab_c), 1e-6, "a + (b + c) vs (a + b) + c");
    }
}

TEST(State, AddSinksMatchesDoubleMath) {
    std::mt19937 rng(5);
    Pair p = random_pair(rng, 0.3);
    Buffer sinks(FST_TYPE_F32, {H, 1, 1, 1});
    const float sink_values[H] = {-2.5f, 4.0f, 25.0f};
    for (int64_t h = 0; h < H; ++h) *sinks.f32(h) = sink_values[h];
    std::vector<Row> expected;
    for_rows([&](int64_t h, int64_t r, int64_t s) {
        Row sink;
        sink.M = sink_values[h];
        sink.S = 1;  // one key of logit sigma_h and value zero
        expected.push_back(merged(get(p, h, r, s), sink));
    });
    const Pair before = p;
    ASSERT_EQ(fst_state_add_sinks(&sinks.t, &p.state.t, &p.out.t), FST_OK) << fst_last_error();
    expect_rows(p, expected, 1e-6, "add_sinks");
    expect_padding_kept(p.state, before.state);
    expect_padding_kept(p.out, before.out);
}

TEST(State, ExportLseInBase2AndBaseE) {
    std::mt19937 rng(6);
    Pair p = random_pair(rng, 0.2);
    // Empty rows with the other maxima an importer may have left: still -inf.
    p.m(0, 1, 1) = -5e4f;
    p.sum(0, 1, 1) = 0;
    p.m(1, 1, 1) = not_a_number;
    p.sum(1, 1, 1) = 0;
    p.m(2, 1, 1) = inf;
    p.sum(2, 1, 1) = 0;
    for (float base : {2.0f, e_literal}) {
        Buffer lse = make_lse();
        lse.fill_bytes(0xCD);
        const Buffer before = lse;
        ASSERT_EQ(fst_state_export_lse(&p.state.t, base, &lse.t), FST_OK) << fst_last_error();
        for_rows([&](int64_t h, int64_t r, int64_t s) {
            float got = lse_at(lse, h, r, s);
            double M = p.m(h, r, s), S = p.sum(h, r, s);
            if (S == 0) {
                EXPECT_TRUE(std::isinf(got) && got < 0) << "empty row h" << h << " r" << r << " s" << s << ": " << got;
                return;
            }
            double lse_e = M + std::log(S);  // LSE_e = M + ln S, LSE_2 = LSE_e / ln 2
            double expected = base == 2.0f ? lse_e / ln2 : lse_e;
            double tol = 1e-6 * std::max(1.0, std::fabs(M) + std::fabs(std::log(S))) / (base == 2.0f ? ln2 : 1.0);
            EXPECT_NEAR(got, expected, tol) << "base " << base << " h" << h << " r" << r << " s" << s;
        });
        expect_padding_kept(lse, before);
    }
}

TEST(State, ImportLseMapsNonFiniteToEmpty) {
    for (float base : {2.0f, e_literal}) {
        Pair p;
        p.state.fill_bytes(0x11);
        for_rows([&](int64_t h, int64_t r, int64_t s) {
            for (int64_t c = 0; c < DV; ++c) p.o(c, h, r, s) = float(1 + c + 10 * h);
        });
        Buffer lse = make_lse();
        const float specials[] = {inf, not_a_number, -inf};
        int i = 0;
        for_rows([&](int64_t h, int64_t r, int64_t s) {
            lse_at(lse, h, r, s) = (h + r + s) % 2 ? specials[i++ % 3] : float(-7.25 + 3 * h + r - s);
        });
        const Pair before = p;
        ASSERT_EQ(fst_state_import_lse(&lse.t, base, &p.state.t, &p.out.t), FST_OK) << fst_last_error();
        Pair b = before;
        for_rows([&](int64_t h, int64_t r, int64_t s) {
            float x = lse_at(lse, h, r, s);
            if (!std::isfinite(x)) {
                EXPECT_EQ(p.sum(h, r, s), 0.0f) << "lse " << x;
                EXPECT_TRUE(std::isinf(p.m(h, r, s)) && p.m(h, r, s) < 0) << "lse " << x << " gave M " << p.m(h, r, s);
                for (int64_t c = 0; c < DV; ++c) EXPECT_EQ(p.o(c, h, r, s), 0.0f) << "lse " << x;
                return;
            }
            double ln_base = base == 2.0f ? ln2 : 1.0;  // M = lse * ln(base)
            EXPECT_NEAR(p.m(h, r, s), x * ln_base, 1e-6 * std::max(1.0, double(std::fabs(x))));
            EXPECT_EQ(p.sum(h, r, s), 1.0f);
            for (int64_t c = 0; c < DV; ++c) EXPECT_EQ(p.o(c, h, r, s), b.o(c, h, r, s)) << "out must be kept";
        });
        expect_padding_kept(p.state, before.state);
        expect_padding_kept(p.out, before.out);
    }
}

// Export b, import it elsewhere with b's output, merge into a: the same as merging b itself, in either base. The
// comparison is on out and on each row's LSE (the imported state has S = 1, so M alone differs by design).
TEST(State, LseRoundTripMergesLikeTheOriginal) {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 10; ++trial) {
        Pair a = random_pair(rng, 0.2), b = random_pair(rng, 0.2);
        Pair direct = a;
        ASSERT_EQ(merge(direct, b), FST_OK);
        std::vector<Row> expected = rows(direct);

        std::vector<std::vector<Row>> via;
        Buffer lse2 = make_lse(), lse_e = make_lse();
        for (float base : {2.0f, e_literal}) {
            Buffer &lse = base == 2.0f ? lse2 : lse_e;
            ASSERT_EQ(fst_state_export_lse(&b.state.t, base, &lse.t), FST_OK) << fst_last_error();
            Pair imported;
            imported.out = b.out;
            ASSERT_EQ(fst_state_import_lse(&lse.t, base, &imported.state.t, &imported.out.t), FST_OK)
                << fst_last_error();
            Pair result = a;
            ASSERT_EQ(merge(result, imported), FST_OK) << fst_last_error();
            via.push_back(rows(result));
        }
        for_rows([&](int64_t h, int64_t r, int64_t s) {
            float x2 = lse_at(lse2, h, r, s), xe = lse_at(lse_e, h, r, s);
            if (std::isinf(xe)) {
                EXPECT_EQ(x2, xe);
            } else {
                EXPECT_NEAR(x2 * ln2, xe, 1e-6 * std::max(1.0, double(std::fabs(xe)))) << "base 2 and base e disagree";
            }
        });
        for (const auto &result : via) {
            for (size_t i = 0; i < expected.size(); ++i) {
                const Row &e = expected[i], &g = result[i];
                if (e.S == 0) {
                    EXPECT_EQ(g.S, 0.0);
                    continue;
                }
                double lse_e_expected = e.M + std::log(e.S), lse_got = g.M + std::log(g.S);
                EXPECT_NEAR(lse_got, lse_e_expected, 2e-6 * std::max(1.0, std::fabs(lse_e_expected))) << "row " << i;
                for (size_t c = 0; c < size_t(DV); ++c) EXPECT_NEAR(g.O[c], e.O[c], 2e-6) << "row " << i;
            }
        }
        for (size_t i = 0; i < expected.size(); ++i)
            for (size_t c = 0; c < size_t(DV); ++c) EXPECT_NEAR(via[0][i].O[c], via[1][i].O[c], 2e-6);
    }
}

TEST(State, LseBaseMustBeTwoOrE) {
    std::mt19937 rng(8);
    Pair p = random_pair(rng, 0.2);
    Buffer lse = make_lse();
    for (float bad : {10.0f, 0.0f, 1.0f, -2.0f, 2.7183f, 2.718f, not_a_number, inf}) {
        const Pair before = p;
        const Buffer lse_before = lse;
        EXPECT_EQ(fst_state_export_lse(&p.state.t, bad, &lse.t), FST_ERR_INVALID_ARGUMENT) << "base " << bad;
        EXPECT_STRNE(fst_last_error(), "");
        EXPECT_EQ(fst_state_import_lse(&lse.t, bad, &p.state.t, &p.out.t), FST_ERR_INVALID_ARGUMENT) << "base " << bad;
        EXPECT_STRNE(fst_last_error(), "");
        EXPECT_EQ(lse.storage, lse_before.storage) << "base " << bad << ": lse written";
        EXPECT_EQ(p.state.storage, before.state.storage) << "base " << bad << ": state written";
        EXPECT_EQ(p.out.storage, before.out.storage) << "base " << bad << ": out written";
    }
    // e within 1e-6, however it was spelled; 2 exactly.
    const float e_values[] = {e_literal, std::exp(1.0f), std::numbers::e_v<float>, std::nextafter(e_literal, 3.0f),
                              std::nextafter(e_literal, 2.0f)};
    for (float good : e_values) {
        EXPECT_EQ(fst_state_export_lse(&p.state.t, good, &lse.t), FST_OK) << "base " << good << fst_last_error();
        EXPECT_EQ(fst_state_import_lse(&lse.t, good, &p.state.t, &p.out.t), FST_OK) << "base " << good;
    }
    EXPECT_EQ(fst_state_export_lse(&p.state.t, 2.0f, &lse.t), FST_OK) << fst_last_error();
    EXPECT_EQ(fst_state_import_lse(&lse.t, 2.0f, &p.state.t, &p.out.t), FST_OK) << fst_last_error();
}

TEST(State, ExportOfTheEmptyStateIsMinusInfinity) {
    Pair p;
    ASSERT_EQ(fst_state_init(&p.state.t, &p.out.t), FST_OK);
    for (float base : {2.0f, e_literal}) {
        Buffer lse = make_lse();
        ASSERT_EQ(fst_state_export_lse(&p.state.t, base, &lse.t), FST_OK) << fst_last_error();
        for_rows([&](int64_t h, int64_t r, int64_t s) {
            float x = lse_at(lse, h, r, s);
            EXPECT_TRUE(std::isinf(x) && x < 0) << x;
        });
    }
}
