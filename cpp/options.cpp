// The options' checks and the decoding modes' names (options.h), and the one serializer of a generation's
// statistics: the Python bindings turn stats_fields() into the stats dict, adadecode-cli --json prints
// result_json(), so both report the same keys.
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "error.h"
#include "options.h"
#include "options_internal.h"

namespace adadecode {

namespace {

constexpr Mode all_modes[] = {Mode::standard, Mode::adadecode, Mode::ngram, Mode::adadecode_ngram};

template <class T>
std::string shortest(T x) {
    char buf[40];
    for (int precision = 1; precision <= 17; ++precision) {
        std::snprintf(buf, sizeof buf, "%.*g", precision, static_cast<double>(x));
        if (static_cast<T>(std::strtod(buf, nullptr)) == x) break;
    }
    return buf;
}

void require(bool ok, const std::string &field, const std::string &rule, const std::string &got) {
    if (!ok) throw Error(field + " must be " + rule + ", got " + got);
}

void append_json_string(std::string &out, const std::string &s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

struct JsonValue {
    std::string &out;
    void operator()(std::nullptr_t) const { out += "null"; }
    void operator()(int64_t v) const { out += std::to_string(v); }
    void operator()(double v) const { out += std::isfinite(v) ? shortest(v) : "null"; }
    template <class T>
    void operator()(const std::vector<T> &v) const {
        out += '[';
        for (size_t i = 0; i < v.size(); ++i) {
            out += i ? ", " : "";
            if constexpr (std::is_integral_v<T>)
                (*this)(int64_t{v[i]});
            else
                (*this)(v[i]);
        }
        out += ']';
    }
    void operator()(const std::string &v) const { append_json_string(out, v); }
};

}  // namespace

const char *mode_name(Mode mode) {
    switch (mode) {
        case Mode::standard: return "standard";
        case Mode::adadecode: return "adadecode";
        case Mode::ngram: return "ngram";
        case Mode::adadecode_ngram: return "adadecode+ngram";
    }
    throw Error("internal: unknown decoding mode " + std::to_string(static_cast<int>(mode)));
}

std::string mode_choices() {
    std::string out;
    for (Mode m : all_modes) out += std::string(out.empty() ? "" : ", ") + mode_name(m);
    return out;
}

Mode parse_mode(const std::string &name) {
    for (Mode m : all_modes) {
        if (name == mode_name(m)) return m;
    }
    throw Error("mode must be one of " + mode_choices() + ", got '" + name + "'");
}

Mode DecodeOptions::mode() const {
    if (layer_parallel) return ngram ? Mode::adadecode_ngram : Mode::adadecode;
    return ngram ? Mode::ngram : Mode::standard;
}

void DecodeOptions::set_mode(Mode m) {
    layer_parallel = mode_uses_heads(m);
    ngram = mode_uses_ngram(m);
}

int DecodeOptions::pending_cap() const {
    if (max_pending > 0)
        return max_pending;
    return ngram ? 5 : 8;
}

void check_sampling(const SamplingParams &s) {
    require(std::isfinite(s.temperature) && s.temperature >= 0.0f, "temperature", "a number >= 0",
            shortest(s.temperature));
    require(s.top_p >= 0.0f && s.top_p <= 1.0f, "top_p", "in [0, 1]", shortest(s.top_p));
    require(s.min_p >= 0.0f && s.min_p <= 1.0f, "min_p", "in [0, 1]", shortest(s.min_p));
}

void check_ngram_options(const NgramOptions &n) {
    require(n.max_draft >= 1, "max_draft", ">= 1", std::to_string(n.max_draft));
    require(n.min_match >= 1, "min_match", ">= 1", std::to_string(n.min_match));
    require(n.max_match >= n.min_match, "max_match", ">= min_match (" + std::to_string(n.min_match) + ")",
            std::to_string(n.max_match));
}

void check_options(const DecodeOptions &o) {
    require(o.max_tokens >= 0, "max_tokens", ">= 0", std::to_string(o.max_tokens));
    check_sampling(o.sampling);
    require(o.gamma >= 0.0f && o.gamma <= 1.0f, "gamma", "in [0, 1]", shortest(o.gamma));
    require(o.max_pending >= 0, "max_pending", ">= 1 (or 0: the default for the mode)", std::to_string(o.max_pending));
    check_ngram_options(o.ngram_options);
    require(o.n_batch >= 1, "n_batch", ">= 1", std::to_string(o.n_batch));
}

StatFields stats_fields(const DecodeStats &s) {
    // ru_maxrss is rounded to 0.1 MiB: finer is noise for a process-wide peak.
    const StatValue rss = s.peak_rss_mib < 0 ? StatValue(nullptr) : StatValue(std::round(s.peak_rss_mib * 10) / 10);
    return {
        {"n_prompt", int64_t{s.n_prompt}},
        {"n_prompt_reused", int64_t{s.n_prompt_reused}},
        {"n_generated", int64_t{s.n_generated}},
        {"prefill_seconds", s.prefill_seconds},
        {"decode_seconds", s.decode_seconds},
        {"tokens_per_second", s.tokens_per_second()},
        {"n_passes", int64_t{s.n_passes}},
        {"rows_per_pass", s.rows_per_pass},
        {"exit_layers", s.exit_layers},
        {"early_per_layer", s.early_per_layer},
        {"accepted_per_layer", s.accepted_per_layer},
        {"n_verified", int64_t{s.n_verified}},
        {"n_accepted", int64_t{s.n_accepted}},
        {"rollbacks", int64_t{s.n_rollbacks}},
        {"accept_rate", s.accept_rate()},
        {"early_exit_fraction", s.early_exit_fraction()},
        {"ngram_drafts", int64_t{s.ngram_drafts}},
        {"ngram_drafted", int64_t{s.ngram_drafted}},
        {"ngram_accepted", int64_t{s.ngram_accepted}},
        {"ngram_fraction", s.ngram_fraction()},
        {"early_in_drafts", int64_t{s.early_in_drafts}},
        {"pass_costs", s.pass_costs},
        {"mode", std::string(mode_name(s.mode))},
        {"device", s.device},
        {"threads", int64_t{s.threads}},
        {"peak_rss_mib", rss},
    };
}

std::string result_json(const DecodeResult &r, const std::string &text) {
    std::string out = "{\"tokens\": [";
    for (size_t i = 0; i < r.tokens.size(); ++i) out += (i ? ", " : "") + std::to_string(r.tokens[i]);
    out += "], \"text\": ";
    append_json_string(out, text);
    out += ", \"finish_reason\": ";
    append_json_string(out, r.finish_reason);
    out += ", \"token_sources\": ";
    append_json_string(out, r.token_sources);
    out += ", \"stats\": {";
    bool first = true;
    for (const auto &[key, value] : stats_fields(r.stats)) {
        out += first ? "" : ", ";
        first = false;
        append_json_string(out, key);
        out += ": ";
        std::visit(JsonValue{out}, value);
    }
    out += "}}";
    return out;
}

std::string shortest_decimal(float x) { return shortest(x); }
std::string shortest_decimal(double x) { return shortest(x); }

double process_peak_rss_mib() {
    rusage usage{};
    if (getrusage(RUSAGE_SELF, &usage) != 0) return -1.0;
#ifdef __APPLE__
    return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // bytes
#else
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB
#endif
}

}  // namespace adadecode
