// What a pass over k rows costs relative to a pass over one row on this machine, learned from the passes that
// decoding times: the curve that prices prompt-lookup drafts (NgramDrafter) and the rows that early exits defer
// (ExitPolicy's m = relative(2) - 1).
//
// Layer-parallel decoding runs passes of many shapes: a token's climb to an exit layer with the head's check, the
// deferred rows' finish over the top layers with logits, whole passes. Normalised by their share of a whole pass
// they still differ by 5-15 % per share (attention, a pass's fixed costs), and each shape comes with its own row
// counts: multi-row passes are mostly deferred rows finishing, one-row passes mostly climbs. Pooled per row count
// (until 2026-12-06), the shapes' differences read as the cost of rows (measured on the 1.5B, AVX-512: an extra row at
// 0.00-0.16 between processes, three rows at 1.08-1.60x one row with one or two samples). So a k-row pass is
// compared with one-row passes of its own shape; a shape that never ran one row (whole passes under
// adadecode+ngram) falls back to the one-row cost per share of the others.
//
// Each shape and row count is the lower median of its last nine passes, and a shape and row count seen fewer than
// three times is trusted no higher than the assumed cost. A mean let one slow pass (112 ms where the same pass took
// 14 ms before and after, in a bench/ab_builds.py run) make two rows look 2.5 times as dear as one: the exit policy
// then refused every exit, and with no multi-row pass left to time, nothing reopened them for the rest of the
// generation (in such runs about 1 prompt in 9 decoded with almost no early token, in the builds before too).
// The per-row-count ratios are then made into a curve that never falls as rows are added (weighted by how often
// each was seen, so that one odd sample cannot make three rows dearer than six), with row counts not seen yet
// interpolated, and past the largest one extended at its average slope: optimistic, so that longer drafts get tried
// and their real cost measured. Before any pass, an extra row is assumed to cost 0.3 of one.
#pragma once

#include <cstddef>
#include <map>
#include <vector>

namespace adadecode {

// The layers a pass runs, and whether it ends with logits or with an exit head's check.
struct PassShape {
    int layer_begin = 0;
    int layer_end = 0;
    bool logits = false;
    bool check = false;

    bool operator<(const PassShape &o) const;
};

class PassCosts {
public:
    // How many of the latest passes of a shape and row count decide its cost, by their lower median: a pass that
    // another process slowed down is one sample out of nine, not a ninth of a mean, and of two the faster counts.
    static constexpr size_t window = 9;

    // A pass of this shape over `rows` rows took `seconds`; `share` is its pass_share() (> 0), by which passes of
    // different shapes compare where one has no one-row pass to compare with.
    void record(const PassShape &shape, double share, int rows, double seconds);

    // Cost of a pass over `rows` rows relative to one row (1 for one row, never less than for fewer rows).
    double relative(int rows) const;

    // The most rows of a pass recorded so far (0 before any).
    int max_rows() const;

private:
    struct Samples {
        std::vector<double> recent;  // seconds, a ring of the last few
        size_t next = 0;
        double lower_median = 0.0;  // of `recent`, kept up to date by add()
        void add(double seconds);
    };
    struct ShapeCosts {
        double share = 1.0;
        std::vector<Samples> by_rows;  // index: rows
    };
    void fit() const;

    std::map<PassShape, ShapeCosts> shapes_;
    mutable std::vector<double> curve_;  // index: rows; empty until fit() after a change
};

}  // namespace adadecode
