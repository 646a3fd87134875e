#include "exit_policy.h"

#include <algorithm>

namespace adadecode {

namespace {
constexpr double kDecay = 0.95;  // about the last 20 early tokens of a layer count
constexpr int kProbeEvery = 16;
// Prior: two accepted tokens, so that every layer starts open and a couple of rejections do not close it.
constexpr double kPriorAccepted = 2.0, kPriorChecked = 2.0;
// Exit rate: about the last 30 checks, and a prior worth one check at 1/2 (see the header).
constexpr double kRateDecay = 0.97;
constexpr double kPriorExits = 0.5, kPriorChecks = 1.0;
// Agreement by confidence: bins of 0.05, each about its last 20 checks, a prior worth two checks at the confidence.
constexpr int kConfidenceBins = 20;
constexpr double kBinDecay = 0.95;
constexpr double kPriorAgreement = 2.0;

int confidence_bin(double confidence) {
    return std::clamp(static_cast<int>(confidence * kConfidenceBins), 0, kConfidenceBins - 1);
}
}  // namespace

ExitPolicy::ExitPolicy(const std::vector<int> &exit_layers, int n_layer, double output_share, double check_cost)
    : layers_(exit_layers),
      n_layer_(n_layer),
      output_share_(std::clamp(output_share, 0.0, 1.0)),
      check_cost_(std::max(0.0, check_cost)),
      checked_(exit_layers.size(), 0.0),
      accepted_(exit_layers.size(), 0.0),
      checks_(exit_layers.size(), 0.0),
      exits_(exit_layers.size(), 0.0),
      bin_checks_(exit_layers.size(), std::vector<double>(kConfidenceBins, 0.0)),
      bin_agreed_(exit_layers.size(), std::vector<double>(kConfidenceBins, 0.0)),
      skipped_(exit_layers.size(), 0),
      open_(exit_layers.size(), 1) {}

double ExitPolicy::break_even(double lower, double later_lower, const ExitTerms &terms) {
    const double m = std::clamp(terms.marginal_row_cost, 0.0, 1.0);
    const double gain = std::max(0.0, later_lower - lower) * (1.0 - m);
    const double loss = lower + m * (1.0 - lower) + m * std::max(0.0, terms.voided_rows);
    const double per_exit_check_cost = terms.check_cost / std::max(terms.exit_rate, 1e-3);
    return gain + loss > 0.0 ? (loss + per_exit_check_cost) / (gain + loss) : 1.0;
}

double ExitPolicy::share_below(int layer) const {
    if (layer >= n_layer_) return 1.0;
    return static_cast<double>(layer) / n_layer_ * (1.0 - output_share_);
}

double ExitPolicy::exit_rate(size_t slot) const {
    return (exits_[slot] + kPriorExits) / (checks_[slot] + kPriorChecks);
}

int ExitPolicy::later_exit(size_t slot) const {
    for (size_t s = slot + 1; s < layers_.size(); ++s) {
        if (open_[s]) return layers_[s];
    }
    return n_layer_;
}

double ExitPolicy::acceptance(size_t slot) const {
    return (accepted_[slot] + kPriorAccepted) / (checked_[slot] + kPriorChecked);
}

bool ExitPolicy::allow(size_t slot, double marginal_row_cost, const ExitContext &context) {
    const double u = std::clamp(context.upstream_acceptance, 0.0, 1.0);
    const ExitTerms terms{marginal_row_cost, check_cost_, exit_rate(slot), context.voided_rows};
    open_[slot] = u * acceptance(slot) >= break_even(share_below(layers_[slot]), share_below(later_exit(slot)), terms);
    if (open_[slot]) {
        skipped_[slot] = 0;
        return true;
    }
    if (++skipped_[slot] >= kProbeEvery) {
        skipped_[slot] = 0;
        return true;
    }
    return false;
}

bool ExitPolicy::exit_pays(size_t slot, double confidence, double marginal_row_cost, const ExitContext &context) const {
    const double u = std::clamp(context.upstream_acceptance, 0.0, 1.0);
    const ExitTerms terms{marginal_row_cost, 0.0, 1.0, context.voided_rows};
    return u * agreement(slot, confidence) >=
           break_even(share_below(layers_[slot]), share_below(later_exit(slot)), terms);
}

double ExitPolicy::agreement(size_t slot, double confidence) const {
    const int b = confidence_bin(confidence);
    const double prior = std::clamp(confidence, 0.0, 1.0);
    return (bin_agreed_[slot][b] + kPriorAgreement * prior) / (bin_checks_[slot][b] + kPriorAgreement);
}

void ExitPolicy::record_agreement(size_t slot, double confidence, bool agreed) {
    const int b = confidence_bin(confidence);
    bin_checks_[slot][b] = kBinDecay * bin_checks_[slot][b] + 1.0;
    bin_agreed_[slot][b] = kBinDecay * bin_agreed_[slot][b] + (agreed ? 1.0 : 0.0);
}

void ExitPolicy::record(size_t slot, bool accepted) {
    checked_[slot] = kDecay * checked_[slot] + 1.0;
    accepted_[slot] = kDecay * accepted_[slot] + (accepted ? 1.0 : 0.0);
}

void ExitPolicy::record_check(size_t slot, bool exited) {
    checks_[slot] = kRateDecay * checks_[slot] + 1.0;
    exits_[slot] = kRateDecay * exits_[slot] + (exited ? 1.0 : 0.0);
}

}  // namespace adadecode
