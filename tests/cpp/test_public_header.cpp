// The public header stands alone: this file sees only cpp/include (CMake links it to adadecode_engine, not to the
// internals), so it compiles only while engine.h pulls in no internal or ggml header.
#include "adadecode/engine.h"

#include <cstdio>
#include <string>

#include "check.h"

#if defined(GGML_API) || defined(GGML_BACKEND_API)
#error "adadecode/engine.h includes a ggml header"
#endif

int main() {
    adadecode::DecodeOptions options;
    CHECK(options.sampling.greedy() && !options.layer_parallel && options.pending_cap() >= 1);
    bool refused = false;
    try {
        adadecode::Engine engine("/nonexistent/model.gguf", adadecode::EngineOptions{});
    } catch (const adadecode::Error &e) {
        refused = std::string(e.what()).find("no such file") != std::string::npos;
    }
    CHECK(refused);
    return g_failures ? 1 : 0;
}
