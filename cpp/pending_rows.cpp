#include "pending_rows.h"

#include <algorithm>

#include "error.h"

namespace adadecode {

int RowSource::exit_index() const {
    if (kind_ != Kind::head) throw Error("internal: a drafted row has no exit index");
    return index_;
}

int RowSource::draft_number() const {
    if (kind_ != Kind::draft) throw Error("internal: a head's row has no draft number");
    return index_;
}

int PendingRows::count_heads() const {
    auto is_head = [](const PendingRow &r) { return r.source.is_head(); };
    return static_cast<int>(std::count_if(rows_.begin(), rows_.end(), is_head));
}

int PendingRows::count_drafts() const { return static_cast<int>(rows_.size()) - count_heads(); }

bool PendingRows::any_at(int layer) const {
    return std::any_of(rows_.begin(), rows_.end(), [layer](const PendingRow &r) { return r.reached == layer; });
}

size_t PendingRows::first_at(int layer) const {
    size_t first = rows_.size();
    while (first > 0 && rows_[first - 1].reached == layer) --first;
    return first;
}

void PendingRows::gather_hidden(size_t first, const std::vector<float> &x_hidden, std::vector<float> *out) const {
    out->clear();
    for (size_t i = first; i < rows_.size(); ++i) {
        out->insert(out->end(), rows_[i].hidden.begin(), rows_[i].hidden.end());
    }
    out->insert(out->end(), x_hidden.begin(), x_hidden.end());
}

void PendingRows::advance(size_t first, int layer, const std::vector<float> &hidden, size_t n_embd) {
    for (size_t i = first; i < rows_.size(); ++i) {
        const auto row_begin = hidden.begin() + static_cast<std::ptrdiff_t>((i - first) * n_embd);
        rows_[i].hidden.assign(row_begin, row_begin + static_cast<std::ptrdiff_t>(n_embd));
        rows_[i].reached = layer;
    }
}

}  // namespace adadecode
