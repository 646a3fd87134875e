// What a generation is asked to do and what it reports: the options, statistics and result types of
// adadecode::Engine::generate (engine.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace adadecode {

// The decoding methods, spelled as users write them (the CLIs' --mode, Python's mode=, stats "mode"):
// "standard", "adadecode" (exit heads), "ngram" (prompt-lookup drafts), "adadecode+ngram" (both).
enum class Mode { standard, adadecode, ngram, adadecode_ngram };

const char *mode_name(Mode mode);
// The mode spelled `name`; an Error naming the choices otherwise.
Mode parse_mode(const std::string &name);
// "standard, adadecode, ngram, adadecode+ngram": the choices, for messages and help texts.
std::string mode_choices();
inline bool mode_uses_heads(Mode mode) { return mode == Mode::adadecode || mode == Mode::adadecode_ngram; }
inline bool mode_uses_ngram(Mode mode) { return mode == Mode::ngram || mode == Mode::adadecode_ngram; }

struct SamplingParams {
    float temperature = 0.0f;  // 0 = greedy
    int top_k = 40;            // <= 0 disables
    float top_p = 0.95f;       // >= 1 disables
    float min_p = 0.05f;       // <= 0 disables
    uint64_t seed = 0;

    bool greedy() const { return temperature <= 0.0f; }
};

// Prompt-lookup drafts (see ngram_draft.h).
struct NgramOptions {
    // Tokens proposed at most per draft. Since the packed kernels prefetch, long drafts pay on code: on the 1.5B,
    // 16 against 8 gave +1.5 % on HumanEval (8 prompts, twice, side by side); chat's drafts are shorter anyway.
    int max_draft = 16;
    int max_match = 4;  // longest suffix looked up
    int min_match = 1;  // shortest suffix that may propose
};

// Rewrites the final-layer logits of one position in place before the token after it is chosen or verified:
// penalties, logit bias, grammar masks. `context` holds every token up to and including that position, so the
// processor sees the same context for a row whether it is verified in a batch or decoded alone, and every mode
// chooses from the same processed distribution. It may throw to abort the generation.
using LogitsProcessor = std::function<void(const int32_t *context, int n_context, float *logits)>;

struct DecodeOptions {
    int max_tokens = 128;
    SamplingParams sampling;
    bool layer_parallel = false;     // needs exit heads
    float gamma = 0.75f;             // head confidence needed to emit a token early (adaptive exits may ask more)
    // Tokens whose upper layers may be deferred at once; 0: pending_cap()'s default for the mode. The exit policy
    // stops a chain of early tokens when the risk that one is rejected outweighs what another exit saves, so this is
    // a cap. Which cap pays depends on the model: without drafts 8 led 5 by 3-6 % on the 1.5B in one session's runs
    // and trailed it by 1.5-6 % on the 0.5B in another; with drafts in flight 8 lost 3-6 % on the 1.5B
    // (bench/results/heads-1.5b/calibrated/).
    int max_pending = 0;
    std::vector<int> active_exits;   // subset of the heads' exit layers; empty = all
    bool adaptive_exits = true;      // exit layers whose early tokens fail verification too often sit out, and a
                                     // confident check exits only where its measured agreement pays (ExitPolicy);
                                     // false: every active exit layer always checks and exits at gamma
    bool ngram = false;              // prompt-lookup drafts enter at layer 0 (works with or without heads)
    // Heads may also emit while a prompt-lookup draft is in flight: on the draft's last row, and on the rows that
    // follow it before the draft is verified (adaptive exits price them: docs/design.md §1, "Exits and drafts").
    // false: heads wait until the draft is verified.
    bool exits_in_drafts = true;
    NgramOptions ngram_options;
    int n_batch = 512;               // prefill chunk
    // When set, receives for every generated token the final-layer logits it was chosen from (n_vocab floats
    // each, in order): the parity tests compare these bitwise between decoding modes.
    std::vector<float> *record_logits = nullptr;  // after logits_processor
    LogitsProcessor logits_processor;             // empty: none

    // The decoding method these options select (layer_parallel, ngram), and selecting one.
    Mode mode() const;
    void set_mode(Mode mode);
    // max_pending, or when it is 0 the default: 8, or 5 with prompt-lookup drafts.
    int pending_cap() const;
};

// Throw an Error naming the first field that holds a value generate() cannot use (e.g. "gamma must be in [0, 1],
// got 1.5"); what needs the model (heads, context size) is checked by generate() itself.
void check_sampling(const SamplingParams &sampling);
void check_ngram_options(const NgramOptions &ngram);
void check_options(const DecodeOptions &options);

struct DecodeStats {
    int n_prompt = 0;
    int n_prompt_reused = 0;  // prompt tokens whose KV entries were kept from the previous generation
    int n_generated = 0;
    double prefill_seconds = 0.0;
    double decode_seconds = 0.0;
    int n_passes = 0;                        // batched layer-range passes during decoding
    std::vector<int> rows_per_pass;          // histogram: rows_per_pass[r] = passes over r rows
    std::vector<int> exit_layers;            // active exit layers
    std::vector<int> early_per_layer;        // tokens emitted early at each active exit layer
    std::vector<int> accepted_per_layer;     // ... of which verification accepted
    int ngram_drafts = 0;                    // prompt-lookup drafts made
    int ngram_drafted = 0;                   // tokens they proposed
    int ngram_accepted = 0;                  // ... of which verification accepted
    int early_in_drafts = 0;                 // early tokens emitted while a draft was in flight
    // The cost of a pass over k rows relative to one row, as the scheduler priced drafts and deferred rows at the
    // end (pass_costs[k - 1]; learned from its own timed passes, up to the most rows one of them had). Empty under
    // sampling, which does not time passes.
    std::vector<double> pass_costs;
    int n_verified = 0;                      // provisional tokens (early or drafted) checked against the final layer
    int n_accepted = 0;
    int n_rollbacks = 0;
    // Filled by Engine::generate: how it ran, the threads its last pass ran on (fewer than the engine's n_threads
    // while other programs kept CPUs busy, see cpp/thread_governor.h), and this process's peak resident memory after
    // it (MiB; < 0 where the OS does not report it).
    Mode mode = Mode::standard;
    std::string device;
    int threads = 0;
    double peak_rss_mib = -1.0;

    double tokens_per_second() const { return decode_seconds > 0 ? n_generated / decode_seconds : 0.0; }
    double accept_rate() const { return n_verified ? static_cast<double>(n_accepted) / n_verified : 0.0; }
    // Share of the generated tokens that an exit head (resp. a prompt-lookup draft) produced.
    double early_exit_fraction() const { return fraction(n_accepted - ngram_accepted); }
    double ngram_fraction() const { return fraction(ngram_accepted); }

private:
    double fraction(int n) const { return n_generated ? std::min(1.0, static_cast<double>(n) / n_generated) : 0.0; }
};

struct DecodeResult {
    std::vector<int32_t> tokens;  // generated tokens, without the end-of-generation token
    // Where each of `tokens` came from, one character per token, all of them verified by the final layer: 'f' the
    // final layer chose it, 'e' an exit head proposed it early, 'd' a prompt-lookup draft proposed it.
    std::string token_sources;
    std::string finish_reason;    // "stop" (end of generation or the callback said stop) or "length"
    DecodeStats stats;
};

// One statistic as the serializers name it: a count, a number, a list of counts or of numbers, text, or null (not
// measured).
using StatValue = std::variant<std::nullptr_t, int64_t, double, std::vector<int>, std::vector<double>, std::string>;
using StatFields = std::vector<std::pair<std::string, StatValue>>;

// The statistics of a generation as named values: the one key set that Python's stats dict (the bindings) and
// adadecode-cli --json both report.
StatFields stats_fields(const DecodeStats &stats);
// One JSON object {"tokens", "text", "finish_reason", "stats"} for a result whose tokens read as `text`.
std::string result_json(const DecodeResult &result, const std::string &text);

// Receives each verified token in order; returns false to stop generating.
using TokenCallback = std::function<bool(int32_t token)>;
// Tells whether a token ends generation (end-of-sequence, end-of-turn ...).
using EndOfGeneration = std::function<bool(int32_t token)>;

}  // namespace adadecode
