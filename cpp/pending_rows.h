// The pending rows of the layer-parallel scheduler: positions whose successor is provisional (emitted early by an
// exit head, or drafted) and whose upper layers are deferred. They sit just below the current token x, oldest first
// and furthest up: each waits at the layer it has reached, with its residual stream there, until x's pass
// reaches that layer and carries it along.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace adadecode {

// Where a provisional token came from: the exit head at active exit index i, or prompt-lookup draft number d of the
// current verification round.
class RowSource {
public:
    static RowSource head(int exit_index) { return RowSource(Kind::head, exit_index); }
    static RowSource draft(int draft_number) { return RowSource(Kind::draft, draft_number); }
    bool is_head() const { return kind_ == Kind::head; }
    bool is_draft() const { return kind_ == Kind::draft; }
    int exit_index() const;    // is_head() only
    int draft_number() const;  // is_draft() only

private:
    enum class Kind { head, draft };
    RowSource(Kind kind, int index) : kind_(kind), index_(index) {}
    Kind kind_;
    int index_;
};

struct PendingRow {
    int pos;                        // the row's own position; its successor goes to pos + 1
    int32_t successor;              // the provisional token
    RowSource source;
    int reached;                    // the row has run through layers [0, reached)
    std::vector<float> hidden;      // residual stream after `reached` (empty while reached == 0)
    std::vector<float> head_probs;  // the head's distribution the successor was sampled from (sampling only)
    double acceptance = 1.0;        // head rows: the exit policy's estimate that verification keeps the successor
};

class PendingRows {
public:
    size_t size() const { return rows_.size(); }
    bool empty() const { return rows_.empty(); }
    const PendingRow &operator[](size_t i) const { return rows_[i]; }

    void add(PendingRow row) { rows_.push_back(std::move(row)); }
    int count_heads() const;
    int count_drafts() const;
    bool any_at(int layer) const;  // does some row wait at `layer`?
    // The rows waiting at `layer` are a suffix (older rows are always further up): the index where it starts.
    size_t first_at(int layer) const;

    // Rows [first, size()) after `x_hidden`'s layer: their states then x's, n_embd floats each, into `out`.
    void gather_hidden(size_t first, const std::vector<float> &x_hidden, std::vector<float> *out) const;
    // Rows [first, size()) ran up to `layer`; `hidden` holds their states there (then x's, which is not kept here).
    void advance(size_t first, int layer, const std::vector<float> &hidden, size_t n_embd);
    void clear() { rows_.clear(); }

private:
    std::vector<PendingRow> rows_;
};

}  // namespace adadecode
