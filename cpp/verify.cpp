#include "verify.h"

#include <algorithm>

namespace adadecode {

namespace {

// Speculative acceptance of one token: true to keep it, else `correction` receives its replacement.
bool accept_sampled(const ProvisionalToken &t, const float *logits, int n_vocab, Sampler &sampler,
                    std::vector<float> *p, int32_t *correction) {
    auto q = [&t](int token) { return t.q ? (*t.q)[token] : (token == t.token ? 1.0f : 0.0f); };
    sampler.distribution(logits, n_vocab, p);
    const float p_y = (*p)[t.token];
    const float q_y = q(t.token);
    if (q_y <= p_y || sampler.uniform() < static_cast<double>(p_y) / q_y) return true;
    std::vector<float> residual(n_vocab);
    double mass = 0.0;
    for (int i = 0; i < n_vocab; ++i) {
        residual[i] = std::max(0.0f, (*p)[i] - q(i));
        mass += residual[i];
    }
    *correction = sampler.sample_from(mass > 0.0 ? residual : *p);
    return false;
}

}  // namespace

Verdict verify(const std::vector<ProvisionalToken> &tokens, const std::function<const float *(size_t)> &final_logits,
               int n_vocab, Sampler &sampler) {
    Verdict verdict;
    std::vector<float> p;
    for (; verdict.kept < tokens.size(); ++verdict.kept) {
        const ProvisionalToken &t = tokens[verdict.kept];
        const float *logits = final_logits(verdict.kept);
        if (sampler.params().greedy()) {
            const int32_t target = argmax(logits, n_vocab);
            if (target == t.token) continue;
            verdict.correction = target;
            break;
        }
        if (!accept_sampled(t, logits, n_vocab, sampler, &p, &verdict.correction)) break;
    }
    return verdict;
}

}  // namespace adadecode
