#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace adadecode {

int32_t argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; ++i) {
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

float softmax(const float *logits, int n, std::vector<float> *probs) {
    probs->resize(n);
    const float max_logit = logits[argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
        (*probs)[i] = std::exp(logits[i] - max_logit);
        sum += (*probs)[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (float &p : *probs) p *= inv;
    return inv;  // probability of the argmax: exp(0) / sum
}

Sampler::Sampler(const SamplingParams &params) : params_(params), rng_(params.seed) {}

double Sampler::uniform() {
    // 53 random bits: the same stream of numbers on every platform (std::uniform_real_distribution is not).
    return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0);
}

void Sampler::distribution(const float *logits, int n, std::vector<float> *probs) const {
    probs->assign(n, 0.0f);
    if (params_.greedy()) {
        (*probs)[argmax(logits, n)] = 1.0f;
        return;
    }
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const auto by_logit = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    int keep = n;
    if (params_.top_k > 0 && params_.top_k < n) {
        keep = params_.top_k;
        std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
    } else {
        std::sort(order.begin(), order.end(), by_logit);
    }
    const double inv_t = 1.0 / params_.temperature;
    const double max_logit = logits[order[0]];
    std::vector<double> weights(keep);
    double total = 0.0;
    for (int i = 0; i < keep; ++i) {
        weights[i] = std::exp((logits[order[i]] - max_logit) * inv_t);
        total += weights[i];
    }
    if (params_.min_p > 0.0f) {
        // min-p keeps tokens whose probability is at least min_p times the most likely one's.
        int k = 1;
        while (k < keep && weights[k] >= params_.min_p * weights[0]) ++k;
        keep = k;
    }
    if (params_.top_p < 1.0f) {
        double partial = 0.0, mass = 0.0;
        for (int i = 0; i < keep; ++i) mass += weights[i];
        int k = 0;
        while (k < keep) {
            partial += weights[k++];
            if (partial >= params_.top_p * mass) break;
        }
        keep = std::max(k, 1);
    }
    total = 0.0;
    for (int i = 0; i < keep; ++i) total += weights[i];
    for (int i = 0; i < keep; ++i) (*probs)[order[i]] = static_cast<float>(weights[i] / total);
}

int32_t Sampler::sample_from(const std::vector<float> &probs) {
    double total = 0.0;
    for (float p : probs) total += p;
    const double target = uniform() * total;
    double acc = 0.0;
    int32_t last_nonzero = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
        if (probs[i] <= 0.0f) continue;
        acc += probs[i];
        last_nonzero = static_cast<int32_t>(i);
        if (acc > target) return last_nonzero;
    }
    return last_nonzero;
}

int32_t Sampler::sample(const float *logits, int n) {
    if (params_.greedy()) return argmax(logits, n);
    std::vector<float> probs;
    distribution(logits, n, &probs);
    return sample_from(probs);
}

}  // namespace adadecode
