#include "pass_costs.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>

namespace adadecode {

namespace {

constexpr double kAssumedCostPerExtraRow = 0.3;
// Below this many samples of a shape and row count its cost is not trusted above the assumed one: a single slow
// sample could otherwise close every exit and stop every draft, leaving no multi-row pass to time that would reopen
// them.
constexpr size_t kTrustedSamples = 3;

double assumed(int rows) {
    return 1.0 + kAssumedCostPerExtraRow * (rows - 1);
}

struct Point {
    int rows;
    double cost, weight;
};

// Pools adjacent points whose costs fall as rows grow into their weighted mean, until none falls.
std::vector<Point> non_decreasing(std::vector<Point> points) {
    struct Pool {
        double cost, weight;
        size_t points;
    };
    std::vector<Pool> pools;
    for (const Point &p : points) {
        pools.push_back(Pool{p.cost, p.weight, 1});
        while (pools.size() > 1 && pools[pools.size() - 2].cost > pools.back().cost) {
            const Pool top = pools.back();
            pools.pop_back();
            Pool &below = pools.back();
            below.cost = (below.cost * below.weight + top.cost * top.weight) / (below.weight + top.weight);
            below.weight += top.weight;
            below.points += top.points;
        }
    }
    size_t i = 0;
    for (const Pool &pool : pools) {
        for (size_t j = 0; j < pool.points; ++j) points[i++].cost = pool.cost;
    }
    return points;
}

}  // namespace

bool PassShape::operator<(const PassShape &o) const {
    return std::tie(layer_begin, layer_end, logits, check) < std::tie(o.layer_begin, o.layer_end, o.logits, o.check);
}

void PassCosts::Samples::add(double seconds) {
    if (recent.size() < window) {
        recent.push_back(seconds);
    } else {
        recent[next] = seconds;
    }
    next = (next + 1) % window;
    std::array<double, window> sorted;
    std::copy(recent.begin(), recent.end(), sorted.begin());
    std::sort(sorted.begin(), sorted.begin() + recent.size());
    lower_median = sorted[(recent.size() - 1) / 2];
}

void PassCosts::record(const PassShape &shape, double share, int rows, double seconds) {
    if (rows < 1 || !(seconds > 0.0) || !std::isfinite(seconds) || !(share > 0.0))
        return;
    ShapeCosts &costs = shapes_[shape];
    costs.share = share;
    if (static_cast<int>(costs.by_rows.size()) <= rows)
        costs.by_rows.resize(rows + 1);
    costs.by_rows[rows].add(seconds);
    curve_.clear();
}

void PassCosts::fit() const {
    // One row's cost per share of a whole pass, over the shapes that ran one row.
    double per_share = 0.0, per_share_weight = 0.0;
    for (const auto &[shape, costs] : shapes_) {
        if (costs.by_rows.size() < 2 || costs.by_rows[1].recent.empty())
            continue;
        const double weight = static_cast<double>(costs.by_rows[1].recent.size());
        per_share += weight * costs.by_rows[1].lower_median / costs.share;
        per_share_weight += weight;
    }
    std::vector<Point> points{Point{1, 1.0, 1e9}};
    const size_t most_rows = static_cast<size_t>(max_rows());
    for (size_t rows = 2; per_share_weight > 0.0 && rows <= most_rows; ++rows) {
        double ratios = 0.0, weights = 0.0;
        for (const auto &[shape, costs] : shapes_) {
            if (costs.by_rows.size() <= rows || costs.by_rows[rows].recent.empty())
                continue;
            const Samples &one = costs.by_rows[1];
            const Samples &these = costs.by_rows[rows];
            const double base = one.recent.empty() ? per_share / per_share_weight * costs.share : one.lower_median;
            double ratio = these.lower_median / base;
            if (these.recent.size() < kTrustedSamples)
                ratio = std::min(ratio, assumed(static_cast<int>(rows)));
            ratios += static_cast<double>(these.recent.size()) * ratio;
            weights += static_cast<double>(these.recent.size());
        }
        if (weights > 0.0)
            points.push_back(Point{static_cast<int>(rows), ratios / weights, weights});
    }
    points = non_decreasing(points);
    // Pooled with one row's exact 1 (of weight 1e9), a cheaper second row lands a rounding below 1.
    for (Point &p : points) p.cost = std::max(1.0, p.cost);
    curve_.assign(points.back().rows + 1, 1.0);
    for (size_t i = 1; i < points.size(); ++i) {
        const Point &a = points[i - 1], &b = points[i];
        for (int rows = a.rows + 1; rows < b.rows; ++rows) {
            curve_[rows] = a.cost + (b.cost - a.cost) * (rows - a.rows) / (b.rows - a.rows);
        }
        // Exactly b's cost: interpolated, it can land an ulp above, and the curve would fall to the next point of
        // b's pool.
        curve_[b.rows] = b.cost;
    }
}

int PassCosts::max_rows() const {
    size_t most = 0;
    for (const auto &[shape, costs] : shapes_) most = std::max(most, costs.by_rows.size());
    return most > 0 ? static_cast<int>(most) - 1 : 0;
}

double PassCosts::relative(int rows) const {
    if (rows <= 1)
        return 1.0;
    if (curve_.empty())
        fit();
    const int measured = static_cast<int>(curve_.size()) - 1;
    if (rows <= measured)
        return curve_[rows];
    if (measured < 2)
        return assumed(rows);
    return curve_[measured] + (curve_[measured] - 1.0) / (measured - 1) * (rows - measured);
}

}  // namespace adadecode
