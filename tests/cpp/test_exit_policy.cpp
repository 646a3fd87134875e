// The exit policy: break-even acceptance from the cost model (check cost included), retiring a layer whose early
// tokens fail or whose checks seldom exit, probing it, and letting it back in when they pass again.
#include <cstdio>

#include "exit_policy.h"

#include "check.h"

using namespace adadecode;

int main() {
    // Late exits save little, so they need more acceptance than early ones; dearer extra rows raise the bar.
    const double early = ExitPolicy::break_even(6, 24, 0.3), late = ExitPolicy::break_even(18, 24, 0.3);
    CHECK(early > 0.0 && early < late && late < 1.0);
    CHECK(ExitPolicy::break_even(18, 24, 0.6) > late);
    // At m = 0.3 and layer 18 of 24: gain 0.25 * 0.7, loss 0.75 + 0.3 * 0.25 -> p > 0.825 / 1.0.
    const double expected = (0.75 + 0.3 * 0.25) / (0.25 * 0.7 + 0.75 + 0.3 * 0.25);
    CHECK(late > expected - 1e-12 && late < expected + 1e-12);

    // A check costs c whatever comes of it; rarely confident heads pay it for few exits: the bar rises with c / x.
    CHECK(ExitPolicy::break_even(18, 24, 0.3, 0.0, 0.2) == late);
    const double with_checks = ExitPolicy::break_even(18, 24, 0.3, 0.02, 0.2);
    const double expected_checks = (0.75 + 0.3 * 0.25 + 0.02 / 0.2) / (0.25 * 0.7 + 0.75 + 0.3 * 0.25);
    CHECK(with_checks > expected_checks - 1e-12 && with_checks < expected_checks + 1e-12);
    CHECK(ExitPolicy::break_even(18, 24, 0.3, 0.02, 1.0) < with_checks);
    {
        ExitPolicy costly({18}, 24, 0.02);
        for (int i = 0; i < 40; ++i) costly.record(0, i % 10 != 0);  // 90 % accepted: above `late`
        CHECK(costly.allow(0, 0.3));
        for (int i = 0; i < 60; ++i) costly.record_check(0, i % 20 == 0);  // but only 1 check in 20 exits
        CHECK(costly.exit_rate(0) < 0.15);
        CHECK(!costly.allow(0, 0.3));
    }

    // Alongside drafts: drafted rows voided with a rejected exit add v * m to the loss; an exit on a draft's row
    // counts only if the draft is accepted too, so u * p must clear the bar.
    const double voided = ExitPolicy::break_even(18, 24, 0.3, 0.0, 1.0, 4.0);
    const double expected_voided = (0.75 + 0.3 * 0.25 + 4 * 0.3) / (0.25 * 0.7 + 0.75 + 0.3 * 0.25 + 4 * 0.3);
    CHECK(voided > expected_voided - 1e-12 && voided < expected_voided + 1e-12);
    CHECK(ExitPolicy::break_even(18, 24, 0.3, 0.0, 1.0, 0.0) == late);
    {
        ExitPolicy sure({6}, 24);
        for (int i = 0; i < 40; ++i) sure.record(0, true);
        CHECK(sure.allow(0, 0.3, ExitContext{1.0, 0.0}));
        CHECK(sure.allow(0, 0.3, ExitContext{0.9, 2.0}));
        CHECK(!sure.allow(0, 0.3, ExitContext{0.2, 0.0}));   // the draft under it is likely rejected
        CHECK(!sure.allow(0, 0.3, ExitContext{0.9, 40.0}));  // a rejection would void many drafted rows
    }

    ExitPolicy policy({6, 18}, 24);
    CHECK(policy.allow(0, 0.3) && policy.allow(1, 0.3));  // optimistic before any evidence
    for (int i = 0; i < 6; ++i) policy.record(1, false);
    CHECK(policy.acceptance(1) < late);
    int allowed = 0;
    for (int i = 0; i < 64; ++i) allowed += policy.allow(1, 0.3) ? 1 : 0;
    CHECK(allowed == 4);                // retired, probed once every 16 skipped checks
    CHECK(policy.allow(0, 0.3));        // the other layer is untouched
    for (int i = 0; i < 60; ++i) policy.record(1, true);
    CHECK(policy.allow(1, 0.3));        // back once its tokens pass verification again
    if (g_failures) std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return g_failures ? 1 : 0;
}
