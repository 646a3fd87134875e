// The pass-cost curve decoding learns from its own timed passes (cpp/pass_costs.h): what drafts and deferred rows
// are priced at.
#include <cmath>
#include <cstdio>

#include "check.h"
#include "pass_costs.h"
#include "pass_runner.h"

using namespace adadecode;

namespace {

bool near(double a, double b) {
    return std::abs(a - b) < 1e-9;
}

// About Qwen2.5-Coder-0.5B: 24 layers, the output matrix 37 % of a pass, a check 1.6 %.
const ModelDims dims{24, 896, 151936, 0.37};
const PassShape climb{0, 18, false, true}, finish{18, 24, true, false}, whole{0, 24, true, false};

double share(const PassShape &s) {
    return pass_share(dims, s.layer_begin, s.layer_end, s.logits, s.check ? 0.016 : 0.0);
}

// Seconds of a pass: a whole one-row pass takes 14 ms, a shape's own overhead scales it, an extra row adds `extra`.
double seconds(const PassShape &s, double overhead, int rows, double extra) {
    return 0.014 * share(s) * overhead * (1.0 + extra * (rows - 1));
}

void test_prior() {
    const PassCosts costs;
    CHECK(near(costs.relative(1), 1.0));
    CHECK(near(costs.relative(2), 1.3));
    CHECK(near(costs.relative(5), 2.2));
}

// Layer-parallel decoding climbs one row to the exit layer and finishes the deferred rows on top. Per share of a
// whole pass the climb costs 15 % more than the finish here: pooled per row count (as before) that difference read
// as the cost of the second row. Each shape against its own one-row passes it does not.
void test_shapes_compare_with_themselves() {
    const double extra = 0.1;
    PassCosts costs;
    for (int i = 0; i < 20; ++i) {
        costs.record(climb, share(climb), 1, seconds(climb, 1.15, 1, extra));
        costs.record(finish, share(finish), 1, seconds(finish, 1.0, 1, extra));
        for (int rows = 2; rows <= 4; ++rows)
            costs.record(finish, share(finish), rows, seconds(finish, 1.0, rows, extra));
    }
    for (int rows = 1; rows <= 4; ++rows) CHECK(near(costs.relative(rows), 1.0 + extra * (rows - 1)));
    // Past the largest row count seen: its average slope.
    CHECK(near(costs.relative(6), 1.5));
}

// Whole passes under adadecode+ngram: drafts always ride with x, so that shape never runs one row; it is compared
// with the other shapes' one-row cost per share.
void test_shape_without_one_row() {
    PassCosts costs;
    for (int i = 0; i < 10; ++i) {
        costs.record(climb, share(climb), 1, seconds(climb, 1.0, 1, 0.0));
        costs.record(finish, share(finish), 1, seconds(finish, 1.0, 1, 0.0));
        costs.record(whole, share(whole), 3, seconds(whole, 1.0, 3, 0.05));
    }
    CHECK(near(costs.relative(3), 1.1));
    CHECK(near(costs.relative(2), 1.05));  // between one row and three
}

// A row count seen once at an odd cost does not make it dearer than a larger one seen often: the curve pools them.
void test_never_falls() {
    PassCosts costs;
    for (int i = 0; i < 10; ++i) {
        costs.record(whole, 1.0, 1, 1.0);
        costs.record(whole, 1.0, 2, 1.1);
        costs.record(whole, 1.0, 6, 1.2);
    }
    costs.record(whole, 1.0, 3, 1.6);
    const double pooled = (1.6 + 9 * 1.2) / 10;  // the last nine six-row passes, and the one three-row pass
    CHECK(near(costs.relative(2), 1.1));
    for (int rows = 3; rows <= 6; ++rows) CHECK(near(costs.relative(rows), pooled));
    for (int rows = 2; rows <= 12; ++rows) CHECK(costs.relative(rows) >= costs.relative(rows - 1));
    // Never falls by as much as an ulp either, where an interpolated stretch meets a pool (seen in the Python test).
    // With these, 1.1386... + (1.8482... - 1.1386...) * 3 / 3 rounds above 1.8482...
    PassCosts ulp;
    for (int i = 0; i < 9; ++i) {
        ulp.record(whole, 1.0, 1, 1.0);
        ulp.record(whole, 1.0, 2, 1.1386412153240486);
        ulp.record(whole, 1.0, 5, 1.8482396408361426);
        ulp.record(whole, 1.0, 6, 1.8482396408361426);
    }
    for (int rows = 2; rows <= 8; ++rows) CHECK(ulp.relative(rows) >= ulp.relative(rows - 1));
    // Cheaper than one row (a slow one-row sample) is one row.
    PassCosts odd;
    odd.record(whole, 1.0, 1, 2.0);
    odd.record(whole, 1.0, 2, 1.0);
    CHECK(near(odd.relative(2), 1.0));
    CHECK(odd.relative(2) >= 1.0);  // not a rounding below
}

// The last nine passes of a shape and row count decide, by their lower median: a change of speed is followed within
// five passes, and a pass slowed by another process is outvoted.
void test_recent_passes_count_more() {
    PassCosts costs;
    for (int i = 0; i < 100; ++i) {
        costs.record(whole, 1.0, 1, 1.0);
        costs.record(whole, 1.0, 2, i < 95 ? 1.5 : 1.1);
    }
    CHECK(near(costs.relative(2), 1.1));
    costs.record(whole, 1.0, 2, 9.0);
    CHECK(near(costs.relative(2), 1.1));
}

// A slow multi-row pass must not close exits and drafts for good: of two samples the faster counts, and below three
// samples of a shape a row count costs at most the assumed 1.3.
void test_one_slow_pass_does_not_trap() {
    PassCosts costs;
    for (int i = 0; i < 10; ++i) {
        costs.record(climb, 1.0, 1, 1.0);
        costs.record(finish, 1.0, 1, 1.0);
    }
    costs.record(climb, 1.0, 2, 8.0);
    CHECK(near(costs.relative(2), 1.3));
    costs.record(climb, 1.0, 2, 1.1);
    CHECK(near(costs.relative(2), 1.1));
    costs.record(climb, 1.0, 2, 8.0);
    CHECK(near(costs.relative(2), 8.0));  // three samples, two of them slow: believed
    // Two more fast ones outvote them (and the other shape agrees).
    for (int i = 0; i < 9; ++i) costs.record(finish, 1.0, 2, 1.1);
    costs.record(climb, 1.0, 2, 1.1);
    costs.record(climb, 1.0, 2, 1.1);
    CHECK(near(costs.relative(2), 1.1));
    // One slow sample of a shape, next to many of another.
    PassCosts two_shapes;
    for (int i = 0; i < 10; ++i) {
        two_shapes.record(climb, 1.0, 1, 1.0);
        two_shapes.record(finish, 1.0, 1, 1.0);
        two_shapes.record(finish, 1.0, 2, 1.1);
    }
    two_shapes.record(climb, 1.0, 2, 5.0);
    CHECK(near(two_shapes.relative(2), (9 * 1.1 + 1.3) / 10));
    // Costs measured lower than assumed count from the first sample.
    PassCosts cheap;
    cheap.record(whole, 1.0, 1, 1.0);
    cheap.record(whole, 1.0, 2, 1.05);
    CHECK(near(cheap.relative(2), 1.05));
}

void test_bad_samples_ignored() {
    PassCosts costs;
    costs.record(whole, 1.0, 1, 1.0);
    costs.record(whole, 1.0, 2, 1.2);
    costs.record(whole, 1.0, 0, 5.0);
    costs.record(whole, 1.0, 2, -1.0);
    costs.record(whole, 1.0, 2, NAN);
    costs.record(whole, 0.0, 2, 9.0);
    costs.record(whole, 1.0, 2, 0.0);
    CHECK(near(costs.relative(2), 1.2));
}

}  // namespace

int main() {
    test_prior();
    test_shapes_compare_with_themselves();
    test_shape_without_one_row();
    test_never_falls();
    test_recent_passes_count_more();
    test_one_slow_pass_does_not_trap();
    test_bad_samples_ignored();
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_pass_costs: all checks passed\n");
    return 0;
}
