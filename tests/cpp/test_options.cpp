// The options' seam (options.h): the modes' one parser, the checks naming the field, and the one statistics
// serializer whose keys the CLI's JSON and the Python dict share. No model needed.
#include <string>

#include "error.h"
#include "options.h"
#include "options_internal.h"

#include "check.h"

using namespace adadecode;

namespace {

std::string error_of(const DecodeOptions &o) {
    try {
        check_options(o);
    } catch (const Error &e) {
        return e.what();
    }
    return "";
}

}  // namespace

int main() {
    for (Mode m : {Mode::standard, Mode::adadecode, Mode::ngram, Mode::adadecode_ngram}) {
        CHECK(parse_mode(mode_name(m)) == m);
        DecodeOptions o;
        o.set_mode(m);
        CHECK(o.mode() == m && o.layer_parallel == mode_uses_heads(m) && o.ngram == mode_uses_ngram(m));
    }
    CHECK(std::string(mode_name(Mode::adadecode_ngram)) == "adadecode+ngram");
    CHECK(mode_choices() == "standard, adadecode, ngram, adadecode+ngram");
    std::string refused;
    try {
        parse_mode("turbo");
    } catch (const Error &e) {
        refused = e.what();
    }
    CHECK(refused == "mode must be one of standard, adadecode, ngram, adadecode+ngram, got 'turbo'");

    CHECK(error_of(DecodeOptions{}).empty());
    DecodeOptions o;
    o.gamma = 1.5f;
    CHECK(error_of(o) == "gamma must be in [0, 1], got 1.5");
    o = DecodeOptions{};
    o.max_pending = -1;
    CHECK(error_of(o) == "max_pending must be >= 1 (or 0: the default for the mode), got -1");
    o = DecodeOptions{};
    o.sampling.top_p = 0.95f + 1.0f;
    CHECK(error_of(o) == "top_p must be in [0, 1], got 1.95");
    o = DecodeOptions{};
    o.ngram_options.max_draft = 0;
    CHECK(error_of(o) == "max_draft must be >= 1, got 0");
    CHECK(shortest_decimal(0.95f) == "0.95" && shortest_decimal(0.75f) == "0.75");

    DecodeResult r;
    r.tokens = {1, 2};
    r.finish_reason = "length";
    r.token_sources = "fe";
    r.stats.n_generated = 2;
    r.stats.exit_layers = {4, 8};
    r.stats.mode = Mode::adadecode_ngram;
    r.stats.device = "CPU \"mapped\"";
    const std::string json = result_json(r, "a\nb");
    CHECK(json.rfind("{\"tokens\": [1, 2], \"text\": \"a\\nb\", \"finish_reason\": \"length\", "
                     "\"token_sources\": \"fe\", \"stats\": {",
                     0) == 0);
    size_t at = 0;
    for (const auto &field : stats_fields(r.stats)) {  // every key, in the serializer's order
        const size_t found = json.find("\"" + field.first + "\": ", at);
        CHECK(found != std::string::npos);
        at = found;
    }
    CHECK(json.find("\"mode\": \"adadecode+ngram\"") != std::string::npos);
    CHECK(json.find("\"device\": \"CPU \\\"mapped\\\"\"") != std::string::npos);
    CHECK(json.find("\"exit_layers\": [4, 8]") != std::string::npos);
    CHECK(json.find("\"peak_rss_mib\": null") != std::string::npos);  // not measured
    CHECK(json.substr(json.size() - 2) == "}}");
    return g_failures ? 1 : 0;
}
