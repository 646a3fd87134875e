// adadecode-cli: the standalone engine, no Python needed. llama.cpp-style flags.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "device.h"
#include "engine.h"
#include "options_internal.h"
#include "vocab.h"

using namespace adadecode;

namespace {

// The defaults shown are the engine's own (options.h, engine.h).
std::string usage_text() {
    const DecodeOptions d;
    const EngineOptions e;
    const auto num = [](float x) { return shortest_decimal(x); };
    return "usage: adadecode-cli -m MODEL (-p PROMPT | -f FILE) [options]\n"
           "\n"
           "  -m, --model PATH|NAME   GGUF model file, or a name fetched before with `adadecode fetch`\n"
           "                          (looked up in $ADADECODE_CACHE/models, default ~/.cache/adadecode/models)\n"
           "  -p, --prompt TEXT       prompt text\n"
           "  -f, --file FILE         read the prompt from FILE\n"
           "  -n, --n-predict N       tokens to generate (default " + std::to_string(d.max_tokens) + ")\n"
           "  -t, --threads N         CPU threads (default: one per core this process may use, fewer while other\n"
           "                          programs keep some busy; N: always N)\n"
           "  -c, --ctx-size N        context size in tokens (default " + std::to_string(e.n_ctx) + ")\n"
           "  -ngl, --n-gpu-layers N  0: compute on the CPU (default); any other value puts the whole model on the "
           "first\n"
           "                          GPU (no partial offload yet); without a GPU a warning, and the CPU\n"
           "      --device NAME       compute on this ggml device (see --list-devices); CPU runs ggml's kernels on a "
           "copy\n"
           "      --list-devices      print the devices of this build and exit\n"
           "      --repack            copy the weights ggml can repack into its multi-row layout (cheaper batched "
           "passes,\n"
           "                          dearer single-row ones)\n"
           "      --temp T            sampling temperature; 0 = greedy (default " + num(d.sampling.temperature) + ")\n"
           "      --top-k N           top-k sampling, 0 = off (default " + std::to_string(d.sampling.top_k) + ")\n"
           "      --top-p P           top-p sampling, 1 = off (default " + num(d.sampling.top_p) + ")\n"
           "      --min-p P           min-p sampling, 0 = off (default " + num(d.sampling.min_p) + ")\n"
           "  -s, --seed N            random seed (default " + std::to_string(d.sampling.seed) + ")\n"
           "      --heads PATH        exit-heads GGUF; enables layer-parallel decoding\n"
           "      --mode M            " + mode_choices() + "\n"
           "                          (default: adadecode when heads are given, else standard); ngram adds\n"
           "                          prompt-lookup drafts\n"
           "      --gamma G           exit-head confidence threshold in [0, 1] (default " + num(d.gamma) + ")\n"
           "      --max-pending K     tokens whose upper layers may be deferred at once (default " +
           std::to_string(d.max_pending) + ")\n"
           "      --json              print one JSON object {tokens, text, finish_reason, stats} instead of "
           "streaming text\n"
           "  -h, --help              show this help\n";
}

[[noreturn]] void fail(const std::string &message) {
    std::fprintf(stderr, "adadecode-cli: error: %s\n", message.c_str());
    std::exit(1);
}

long parse_int(const std::string &flag, const std::string &v, long low, long high) {
    char *end = nullptr;
    errno = 0;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || x < low || x > high) {
        fail(flag + " expects an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "], got '" + v + "'");
    }
    return x;
}

double parse_float(const std::string &flag, const std::string &v, double low, double high) {
    char *end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= low && x <= high)) {
        fail(flag + " expects a number in [" + std::to_string(low) + ", " + std::to_string(high) + "], got '" + v + "'");
    }
    return x;
}

bool is_file(const std::string &p) {
    struct stat st {};
    return stat(p.c_str(), &st) == 0;
}

std::string resolve_model(const std::string &name) {
    if (is_file(name)) return name;
    const char *cache = std::getenv("ADADECODE_CACHE");
    const char *home = std::getenv("HOME");
    const std::string dir = cache ? cache : std::string(home ? home : ".") + "/.cache/adadecode";
    const std::string cached = dir + "/models/" + name + ".gguf";
    if (is_file(cached)) return cached;
    fail("model '" + name + "' is neither a file nor a fetched model (run `adadecode fetch " + name + "`)");
}

}  // namespace

int main(int argc, char **argv) {
    std::string model, prompt, prompt_file, heads;
    bool have_mode = false;
    Mode mode = Mode::standard;
    bool have_prompt = false, json = false;
    EngineOptions eo;
    DecodeOptions d;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) fail(a + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage_text().c_str(), stdout);
            return 0;
        } else if (a == "-m" || a == "--model") {
            model = value();
        } else if (a == "-p" || a == "--prompt") {
            prompt = value();
            have_prompt = true;
        } else if (a == "-f" || a == "--file") {
            prompt_file = value();
        } else if (a == "-n" || a == "--n-predict") {
            d.max_tokens = static_cast<int>(parse_int(a, value(), 0, 1 << 24));
        } else if (a == "-t" || a == "--threads") {
            eo.n_threads = static_cast<int>(parse_int(a, value(), 1, 512));
        } else if (a == "--repack") {
            eo.repack = true;
        } else if (a == "-ngl" || a == "--n-gpu-layers" || a == "--gpu-layers") {
            if (parse_int(a, value(), -1, 1 << 20) != 0) {
                if (has_gpu()) {
                    eo.device = "gpu";
                } else {
                    std::fprintf(stderr, "adadecode-cli: warning: %s asks for a GPU but this build has none; "
                                         "computing on the CPU\n", a.c_str());
                }
            }
        } else if (a == "--device") {
            eo.device = value();
        } else if (a == "--list-devices") {
            for (const DeviceInfo &dev : list_devices()) {
                std::printf("%s\t%s\t%s\n", dev.name.c_str(), dev.kind.c_str(), dev.description.c_str());
            }
            return 0;
        } else if (a == "-c" || a == "--ctx-size") {
            eo.n_ctx = static_cast<int>(parse_int(a, value(), 1, 1 << 24));
        } else if (a == "--temp") {
            d.sampling.temperature = static_cast<float>(parse_float(a, value(), 0.0, 100.0));
        } else if (a == "--top-k") {
            d.sampling.top_k = static_cast<int>(parse_int(a, value(), 0, 1 << 24));
        } else if (a == "--top-p") {
            d.sampling.top_p = static_cast<float>(parse_float(a, value(), 0.0, 1.0));
        } else if (a == "--min-p") {
            d.sampling.min_p = static_cast<float>(parse_float(a, value(), 0.0, 1.0));
        } else if (a == "-s" || a == "--seed") {
            d.sampling.seed = static_cast<uint64_t>(parse_int(a, value(), 0, 0x7fffffffffffffffL));
        } else if (a == "--heads") {
            heads = value();
        } else if (a == "--mode") {
            try {
                mode = parse_mode(value());
                have_mode = true;
            } catch (const Error &e) {
                fail("--" + std::string(e.what()));
            }
        } else if (a == "--gamma") {
            d.gamma = static_cast<float>(parse_float(a, value(), 0.0, 1.0));
        } else if (a == "--max-pending") {
            d.max_pending = static_cast<int>(parse_int(a, value(), 1, 64));
        } else if (a == "--json") {
            json = true;
        } else {
            fail("unknown argument '" + a + "' (see --help)");
        }
    }
    if (model.empty()) fail("no model given (-m)");
    if (!prompt_file.empty()) {
        std::ifstream in(prompt_file, std::ios::binary);
        if (!in) fail("cannot read prompt file '" + prompt_file + "'");
        std::stringstream ss;
        ss << in.rdbuf();
        prompt = ss.str();
        have_prompt = true;
    }
    if (!have_prompt) fail("no prompt given (-p or -f)");
    if (prompt.empty()) fail("the prompt is empty");
    if (!have_mode) mode = heads.empty() ? Mode::standard : Mode::adadecode;
    if (mode_uses_heads(mode) && heads.empty()) fail(std::string("--mode ") + mode_name(mode) + " needs --heads");
    d.set_mode(mode);

    try {
        eo.heads_path = heads;
        Engine engine(resolve_model(model), eo);
        const Vocab &vocab = engine.vocab();
        const std::vector<int32_t> ids = vocab.tokenize(prompt, true, true);
        StreamDecoder stream(vocab, false);
        std::string text;
        DecodeResult r = engine.generate(ids, d, [&](int32_t token) {
            const std::string piece = stream.push(token);
            text += piece;
            if (!json) {
                std::fwrite(piece.data(), 1, piece.size(), stdout);
                std::fflush(stdout);
            }
            return true;
        });
        const std::string tail = stream.flush();
        text += tail;
        const DecodeStats &s = r.stats;
        if (json) {
            std::printf("%s\n", result_json(r, text).c_str());
        } else {
            std::fwrite(tail.data(), 1, tail.size(), stdout);
            std::fprintf(stdout, "\n");
            std::fprintf(stderr, "\n[%d prompt tokens in %.3f s; %d generated in %.3f s: %.2f tokens/s", s.n_prompt,
                         s.prefill_seconds, s.n_generated, s.decode_seconds, s.tokens_per_second());
            if (d.layer_parallel) std::fprintf(stderr, "; early %.1f%%", 100 * s.early_exit_fraction());
            if (d.ngram) std::fprintf(stderr, "; drafted %.1f%%", 100 * s.ngram_fraction());
            if (d.layer_parallel || d.ngram) {
                std::fprintf(stderr, ", accept %.1f%%, %d rollbacks", 100 * s.accept_rate(), s.n_rollbacks);
            }
            std::fprintf(stderr, "]\n");
        }
    } catch (const Error &e) {
        fail(e.what());
    } catch (const std::exception &e) {
        fail(std::string("unexpected failure: ") + e.what());
    }
    return 0;
}
