// Token selection from logits: greedy, or sampling with temperature / top-k / top-p / min-p and a seeded RNG.
// Also the pieces of the speculative acceptance rule the layer-parallel scheduler needs (the filtered
// distribution as a probability vector, sampling from an arbitrary distribution).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "options.h"

namespace adadecode {

// The index of the largest logit; ties go to the lowest index, as in every reference implementation.
int32_t argmax(const float *logits, int n);

// Softmax of logits (temperature 1), written into probs; returns the largest probability.
float softmax(const float *logits, int n, std::vector<float> *probs);

class Sampler {
public:
    explicit Sampler(const SamplingParams &params);

    const SamplingParams &params() const { return params_; }
    // The distribution standard sampling draws from: temperature, then top-k, top-p and min-p, renormalised.
    void distribution(const float *logits, int n, std::vector<float> *probs) const;
    int32_t sample(const float *logits, int n);
    int32_t sample_from(const std::vector<float> &probs);  // probs need not be normalised
    double uniform();                                      // in [0, 1)

private:
    SamplingParams params_;
    std::mt19937_64 rng_;
};

}  // namespace adadecode
