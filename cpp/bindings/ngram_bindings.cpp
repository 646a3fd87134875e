// pybind11 binding of the prompt-lookup drafter's offline replay (ngram_replay.h), for bench/ngram_oracle.py: the
// engine's own policy, not a Python copy of it, is what gets judged against the oracle.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "ngram_replay.h"

namespace py = pybind11;
using namespace adadecode;

void bind_ngram(py::module_ &m) {
    m.def(
        "replay_ngram_drafts",
        [](const std::vector<int32_t> &prompt, const std::vector<int32_t> &output,
           const std::vector<double> &relative_cost, std::optional<int> max_draft) {
            NgramOptions options;
            if (max_draft)
                options.max_draft = *max_draft;
            const NgramReplay r = replay_ngram_drafts(options, prompt, output, relative_cost);
            py::dict d;
            d["tokens"] = r.tokens;
            d["passes"] = r.passes;
            d["cost"] = r.cost;
            d["speedup"] = r.speedup();
            d["drafts"] = r.drafts;
            d["drafted"] = r.drafted;
            d["accepted"] = r.accepted;
            d["rows_per_pass"] = r.rows;
            return d;
        },
        py::arg("prompt"), py::arg("output"), py::arg("relative_cost"), py::arg("max_draft") = py::none(),
        "Replays the engine's prompt-lookup drafter over a recorded greedy output (token ids after the prompt), with "
        "relative_cost[r - 1] the cost of a pass over r rows relative to one row (the first must be 1.0); returns "
        "the tokens, passes and cost of the replay, its speedup over one token per one-row pass, and the drafts' "
        "counts. max_draft: the engine's default when None.");
}
