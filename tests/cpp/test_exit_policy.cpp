// The exit policy: break-even acceptance from the cost model (check cost included, gain up to the next open exit
// layer, the output matrix's share), retiring a layer whose early tokens fail or whose checks seldom exit, probing
// it, and letting it back in when they pass again; per check, the head's agreement measured by confidence and the
// early tokens still unverified below it.
#include <cstdio>

#include "exit_policy.h"

#include "check.h"

using namespace adadecode;

namespace {
bool near(double a, double b) { return a > b - 1e-12 && a < b + 1e-12; }
}  // namespace

int main() {
    // Shares without an output matrix: layer e of 24 lies at e / 24. Late exits save little, so they need more
    // acceptance than early ones; dearer extra rows raise the bar.
    const ExitTerms m3{0.3};
    const double early = ExitPolicy::break_even(6 / 24.0, 1.0, m3), late = ExitPolicy::break_even(18 / 24.0, 1.0, m3);
    CHECK(early > 0.0 && early < late && late < 1.0);
    CHECK(ExitPolicy::break_even(18 / 24.0, 1.0, ExitTerms{0.6}) > late);
    // At m = 0.3 and layer 18 of 24: gain 0.25 * 0.7, loss 0.75 + 0.3 * 0.25 -> p > 0.825 / 1.0.
    CHECK(near(late, (0.75 + 0.3 * 0.25) / (0.25 * 0.7 + 0.75 + 0.3 * 0.25)));
    {
        // The output matrix rides along with an accepted exit's upper layers: with o = 0.2 layer 18 lies at 0.6,
        // and everything above it (0.4 of a pass) is what an exit there saves.
        const ExitPolicy with_output({18}, 24, 0.2);
        CHECK(near(with_output.share_below(18), 0.6) && with_output.share_below(24) == 1.0);
        const double bar = ExitPolicy::break_even(0.6, 1.0, m3);
        CHECK(near(bar, (0.6 + 0.3 * 0.4) / (0.4 * 0.7 + 0.6 + 0.3 * 0.4)) && bar < late);
    }

    // A check costs c whatever comes of it; rarely confident heads pay it for few exits: the bar rises with c / x.
    CHECK(ExitPolicy::break_even(0.75, 1.0, ExitTerms{0.3, 0.0, 0.2}) == late);
    const double with_checks = ExitPolicy::break_even(0.75, 1.0, ExitTerms{0.3, 0.02, 0.2});
    CHECK(near(with_checks, (0.75 + 0.3 * 0.25 + 0.02 / 0.2) / (0.25 * 0.7 + 0.75 + 0.3 * 0.25)));
    CHECK(ExitPolicy::break_even(0.75, 1.0, ExitTerms{0.3, 0.02, 1.0}) < with_checks);
    {
        ExitPolicy costly({18}, 24, 0.0, 0.02);
        for (int i = 0; i < 40; ++i) costly.record(0, i % 10 != 0);  // 90 % accepted: above `late`
        CHECK(costly.allow(0, 0.3));
        for (int i = 0; i < 60; ++i) costly.record_check(0, i % 20 == 0);  // but only 1 check in 20 exits
        CHECK(costly.exit_rate(0) < 0.15);
        CHECK(!costly.allow(0, 0.3));
    }

    // Below an open later exit layer an exit only gains the layers between the two: at layer 6 under 18 (of 24),
    // gain 12/24 * 0.7 instead of 18/24 * 0.7.
    const double under = ExitPolicy::break_even(0.25, 0.75, m3);
    CHECK(near(under, (0.25 + 0.3 * 0.75) / (0.5 * 0.7 + 0.25 + 0.3 * 0.75)) && under > early);
    {
        // A head right 92 % of the time that exits on 8 % of its checks (checks 3 % of a pass): worth it alone,
        // not under an open later layer; once that layer's tokens fail and it closes, worth it again.
        ExitPolicy pair({6, 18}, 24, 0.0, 0.03);
        for (int i = 0; i < 100; ++i) pair.record(0, i % 14 != 0);
        for (int i = 0; i < 100; ++i) pair.record_check(0, i % 12 == 0);
        CHECK(pair.later_exit(0) == 18);
        CHECK(!pair.allow(0, 0.3));
        for (int i = 0; i < 6; ++i) pair.record(1, false);
        CHECK(!pair.allow(1, 0.3));
        CHECK(pair.later_exit(0) == 24);
        CHECK(pair.allow(0, 0.3));
    }

    // Alongside drafts: drafted rows voided with a rejected exit add v * m to the loss; an exit on a draft's row
    // counts only if the draft is accepted too, so u * p must clear the bar.
    const double voided = ExitPolicy::break_even(0.75, 1.0, ExitTerms{0.3, 0.0, 1.0, 4.0});
    CHECK(near(voided, (0.75 + 0.3 * 0.25 + 4 * 0.3) / (0.25 * 0.7 + 0.75 + 0.3 * 0.25 + 4 * 0.3)));
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

    {
        // Before any evidence a head is taken at its word: agreement = confidence.
        ExitPolicy calibrated({18}, 24, 0.2);
        CHECK(near(calibrated.agreement(0, 0.8), 0.8));
        // At layer 18 with o = 0.2 and m = 0.3 the bar is (0.6 + 0.3 * 0.4) / (0.4 * 0.7 + 0.6 + 0.3 * 0.4) = 0.72.
        CHECK(calibrated.exit_pays(0, 0.8, 0.3, ExitContext{}));
        // This head's tokens at confidence 0.80-0.85 turn out right half the time, those at 0.95 and above always:
        // the first no longer exit, the second do, and bins it has not seen keep the prior.
        for (int i = 0; i < 40; ++i) calibrated.record_agreement(0, 0.82, i % 2 == 0);
        for (int i = 0; i < 40; ++i) calibrated.record_agreement(0, 0.97, true);
        CHECK(calibrated.agreement(0, 0.81) < 0.55 && calibrated.agreement(0, 0.96) > 0.95);
        CHECK(near(calibrated.agreement(0, 0.9), 0.9));
        CHECK(!calibrated.exit_pays(0, 0.82, 0.3, ExitContext{}));
        CHECK(calibrated.exit_pays(0, 0.97, 0.3, ExitContext{}));
        // Unverified early tokens below it (u = 0.7) void a later exit when rejected: 0.7 * ~0.99 < 0.72.
        CHECK(!calibrated.exit_pays(0, 0.97, 0.3, ExitContext{0.7, 0.0}));
        // A head that underrates itself: at 0.55 it agrees 90 % of the time, so those tokens exit.
        for (int i = 0; i < 40; ++i) calibrated.record_agreement(0, 0.55, i % 10 != 0);
        CHECK(calibrated.exit_pays(0, 0.55, 0.3, ExitContext{}));
        // Recent checks weigh more: the bin that failed recovers once its tokens agree again.
        for (int i = 0; i < 60; ++i) calibrated.record_agreement(0, 0.82, true);
        CHECK(calibrated.exit_pays(0, 0.82, 0.3, ExitContext{}));
    }

    if (g_failures) std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return g_failures ? 1 : 0;
}
