#include "exit_policy.h"

#include <algorithm>

namespace adadecode {

namespace {
constexpr double kDecay = 0.95;  // about the last 20 early tokens of a layer count
constexpr int kProbeEvery = 16;
// Prior: two accepted tokens, so that every layer starts open and a couple of rejections do not close it.
constexpr double kPriorAccepted = 2.0, kPriorChecked = 2.0;
}  // namespace

ExitPolicy::ExitPolicy(const std::vector<int> &exit_layers, int n_layer, double check_cost)
    : layers_(exit_layers),
      n_layer_(n_layer),
      check_cost_(std::max(0.0, check_cost)),
      checked_(exit_layers.size(), 0.0),
      accepted_(exit_layers.size(), 0.0),
      checks_(exit_layers.size(), 0.0),
      exits_(exit_layers.size(), 0.0),
      skipped_(exit_layers.size(), 0) {}

double ExitPolicy::break_even(int exit_layer, int n_layer, double marginal_row_cost, double check_cost,
                              double exit_rate, double voided_rows) {
    const double m = std::clamp(marginal_row_cost, 0.0, 1.0);
    const double upper = static_cast<double>(n_layer - exit_layer) / n_layer;
    const double gain = upper * (1.0 - m);
    const double loss = static_cast<double>(exit_layer) / n_layer + m * upper + m * std::max(0.0, voided_rows);
    // Above 1 when the checks cost more than exits could ever save: the layer only runs its probes.
    const double per_exit_check_cost = check_cost / std::max(exit_rate, 1e-3);
    return gain + loss > 0.0 ? (loss + per_exit_check_cost) / (gain + loss) : 1.0;
}

double ExitPolicy::exit_rate(size_t slot) const {
    return (exits_[slot] + 1.0) / (checks_[slot] + 2.0);
}

double ExitPolicy::acceptance(size_t slot) const {
    return (accepted_[slot] + kPriorAccepted) / (checked_[slot] + kPriorChecked);
}

bool ExitPolicy::allow(size_t slot, double marginal_row_cost, const ExitContext &context) {
    const double u = std::clamp(context.upstream_acceptance, 0.0, 1.0);
    if (u * acceptance(slot) >= break_even(layers_[slot], n_layer_, marginal_row_cost, check_cost_, exit_rate(slot),
                                           context.voided_rows)) {
        skipped_[slot] = 0;
        return true;
    }
    if (++skipped_[slot] >= kProbeEvery) {
        skipped_[slot] = 0;
        return true;
    }
    return false;
}

void ExitPolicy::record(size_t slot, bool accepted) {
    checked_[slot] = kDecay * checked_[slot] + 1.0;
    accepted_[slot] = kDecay * accepted_[slot] + (accepted ? 1.0 : 0.0);
}

void ExitPolicy::record_check(size_t slot, bool exited) {
    checks_[slot] = kDecay * checks_[slot] + 1.0;
    exits_[slot] = kDecay * exits_[slot] + (exited ? 1.0 : 0.0);
}

}  // namespace adadecode
