// REPS whole passes of ROWS rows of a model (2 threads, position 200, logits of every row), for `perf record`;
// prints the fastest. Experiment, built against a CMake build of the repository in /tmp/build-t:
//   c++ -O3 -std=gnu++17 -I cpp -I cpp/include/adadecode -I ggml -I cpp/include -isystem LIBGGML/include -c passes.cpp
//   c++ passes.o -o passes /tmp/build-t/libadadecode_engine.a /tmp/build-t/libadadecode_ggml_rpc.a -LLIBGGML/lib64
//       -lggml -lggml-cpu -lggml-base -Wl,-rpath,LIBGGML/lib64      (LIBGGML: the libggml-python package's libggml)
//   perf record -F 2999 ./passes MODEL.gguf ROWS REPS
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "device.h"
#include "forward.h"
using namespace adadecode;
int main(int argc, char **argv) {
    const int rows = std::atoi(argv[2]), reps = std::atoi(argv[3]), pos = 200;
    Model model(argv[1], false, find_device(""), true);
    const HParams &hp = model.hparams();
    KvCache cache(model, pos + 64);
    Forward fw(model, cache, 2, true);
    std::vector<int32_t> prompt(pos + 16);
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919) % hp.n_vocab);
    PassRequest fill; fill.layer_end = hp.n_layer; fill.n_rows = pos; fill.tokens = prompt.data(); fill.prompt = true;
    PassResult out; fw.run(fill, &out);
    double best = 1e9;
    for (int r = 0; r < reps; ++r) {
        cache.truncate(pos);
        PassRequest req; req.layer_end = hp.n_layer; req.pos0 = pos; req.n_rows = rows; req.tokens = prompt.data() + pos;
        req.logits = PassRequest::Logits::all;
        auto t0 = std::chrono::steady_clock::now();
        fw.run(req, &out);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("rows %d best %.2f ms\n", rows, best * 1e3);
}
