// verify(): greedy acceptance, rejection and correction; the rejection sampler's output follows the target p
// exactly whatever the proposal q (chi-square on synthetic distributions, fixed seeds): a drafted token (q one-hot),
// a head's q overlapping p, a q disjoint from p.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "verify.h"

#include "check.h"

using namespace adadecode;

namespace {

constexpr int n_vocab = 6;

// Pearson's chi-square of `counts` against the probabilities `p` (cells with p = 0 must be empty).
double chi_square(const std::vector<int> &counts, const std::vector<float> &p, int n) {
    double chi = 0.0;
    for (size_t i = 0; i < p.size(); ++i) {
        if (p[i] == 0.0f) {
            if (counts[i] != 0) return INFINITY;
            continue;
        }
        const double expected = static_cast<double>(p[i]) * n;
        chi += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    return chi;
}

SamplingParams plain_sampling(uint64_t seed) {
    SamplingParams s;
    s.temperature = 1.0f;
    s.top_k = 0;
    s.top_p = 1.0f;
    s.min_p = 0.0f;
    s.seed = seed;
    return s;
}

// The emitted token's distribution over `n` single-token verifications, the token drawn from q (or fixed: drafted).
std::vector<int> emitted_counts(const std::vector<float> &logits, const std::vector<float> *q, int32_t drafted, int n,
                                uint64_t seed) {
    Sampler sampler(plain_sampling(seed));
    std::mt19937_64 proposal_rng(seed + 1000);
    std::vector<int> counts(n_vocab, 0);
    for (int k = 0; k < n; ++k) {
        int32_t y = drafted;
        if (q) {
            std::discrete_distribution<int> from_q(q->begin(), q->end());
            y = from_q(proposal_rng);
        }
        const Verdict v = verify({ProvisionalToken{y, q}}, [&](size_t) { return logits.data(); }, n_vocab, sampler);
        ++counts[v.kept == 1 ? y : v.correction];
    }
    return counts;
}

}  // namespace

int main() {
    // Greedy: keep the leading tokens that are the final layer's argmax, replace the first that is not.
    {
        std::vector<float> rows(3 * n_vocab, 0.0f);
        rows[0 * n_vocab + 2] = 1.0f;  // argmax 2
        rows[1 * n_vocab + 4] = 1.0f;  // argmax 4
        rows[2 * n_vocab + 1] = 1.0f;  // argmax 1
        Sampler sampler(SamplingParams{});
        int asked = 0;
        auto logits = [&](size_t i) {
            ++asked;
            return rows.data() + i * n_vocab;
        };
        Verdict all = verify({{2}, {4}, {1}}, logits, n_vocab, sampler);
        CHECK(all.kept == 3 && !all.rejected() && all.checked() == 3 && asked == 3);
        asked = 0;
        Verdict second = verify({{2}, {5}, {1}}, logits, n_vocab, sampler);
        CHECK(second.kept == 1 && second.correction == 4 && second.checked() == 2);
        CHECK(asked == 2);  // the rows after the mismatch are not prepared
        asked = 0;
        Verdict first = verify({{0}, {4}}, logits, n_vocab, sampler);
        CHECK(first.kept == 0 && first.correction == 2 && asked == 1);
        Verdict none = verify({}, logits, n_vocab, sampler);
        CHECK(none.kept == 0 && !none.rejected());
        // Ties go to the lowest index, as in standard decoding.
        std::vector<float> tie(n_vocab, 1.0f);
        CHECK(verify({{3}}, [&](size_t) { return tie.data(); }, n_vocab, sampler).correction == 0);
        // Greedy verification draws nothing from the RNG.
        Sampler fresh(SamplingParams{});
        CHECK(sampler.uniform() == fresh.uniform());
    }

    // Sampling: p from logits; the emitted token must follow p.
    const std::vector<float> p = {0.05f, 0.30f, 0.15f, 0.0f, 0.40f, 0.10f};
    std::vector<float> logits(n_vocab);
    for (int i = 0; i < n_vocab; ++i) logits[i] = p[i] > 0.0f ? std::log(p[i]) : -INFINITY;
    std::vector<float> target;
    Sampler(plain_sampling(0)).distribution(logits.data(), n_vocab, &target);
    const int n = 40000;
    const double critical = 20.52;  // chi-square, 5 degrees of freedom, p = 0.001
    const double critical_4 = 18.47;  // 4 degrees of freedom (one cell of p is 0)

    // A drafted token is a deterministic proposal: q one-hot. Every token of the vocabulary in turn, p = 0 included.
    for (int32_t d = 0; d < n_vocab; ++d) {
        const double chi = chi_square(emitted_counts(logits, nullptr, d, n, 7 + d), target, n);
        if (!(chi < critical_4)) std::fprintf(stderr, "drafted %d: chi-square %.2f\n", d, chi);
        CHECK(chi < critical_4);
    }
    // A head's q overlapping p (some tokens more likely under q, some less, one where p is 0).
    const std::vector<float> overlapping = {0.30f, 0.10f, 0.15f, 0.05f, 0.20f, 0.20f};
    const double chi_overlap = chi_square(emitted_counts(logits, &overlapping, -1, n, 21), target, n);
    CHECK(chi_overlap < critical_4);
    // q disjoint from p: every proposal is rejected and the correction is drawn from p itself.
    const std::vector<float> disjoint = {0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 0.0f};
    CHECK(chi_square(emitted_counts(logits, &disjoint, -1, n, 33), target, n) < critical_4);
    // q equal to p: always kept.
    {
        Sampler sampler(plain_sampling(5));
        const Verdict v =
            verify({ProvisionalToken{4, &target}}, [&](size_t) { return logits.data(); }, n_vocab, sampler);
        CHECK(v.kept == 1);
    }
    // The test has power: the proposals themselves (what an accept-everything rule would emit) fail it.
    std::vector<int> proposals(n_vocab, 0);
    {
        std::mt19937_64 rng(21 + 1000);
        std::discrete_distribution<int> from_q(overlapping.begin(), overlapping.end());
        for (int k = 0; k < n; ++k) ++proposals[from_q(rng)];
    }
    CHECK(chi_square(proposals, target, n) > 100 * critical);

    // A full-support p, on a q that favours the unlikely tokens.
    const std::vector<float> full = {0.25f, 0.05f, 0.10f, 0.20f, 0.15f, 0.25f};
    std::vector<float> full_logits(n_vocab);
    for (int i = 0; i < n_vocab; ++i) full_logits[i] = std::log(full[i]);
    std::vector<float> full_target;
    Sampler(plain_sampling(0)).distribution(full_logits.data(), n_vocab, &full_target);
    const std::vector<float> skewed = {0.02f, 0.40f, 0.30f, 0.08f, 0.10f, 0.10f};
    CHECK(chi_square(emitted_counts(full_logits, &skewed, -1, n, 45), full_target, n) < critical);
    CHECK(chi_square(emitted_counts(full_logits, nullptr, 1, n, 46), full_target, n) < critical);

    if (g_failures) std::fprintf(stderr, "%d checks failed\n", g_failures);
    return g_failures ? 1 : 0;
}
