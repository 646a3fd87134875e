// pybind11 module adadecode._core: the engine, the vocabulary (vocab_bindings.cpp), ggml quantization
// (quantize_bindings.cpp), the prompt-lookup drafter's offline replay (ngram_bindings.cpp) and the error type.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <variant>

#include "cpu_threads.h"
#include "device.h"
#include "engine.h"
#include "heads.h"
#include "model.h"
#include "ops/attention.h"
#include "ops/qmatmul.h"
#include "rpc.h"
#include "unicode.h"
#include "vocab.h"

namespace py = pybind11;
using namespace adadecode;

void bind_vocab(py::module_ &m);
void bind_quantize(py::module_ &m);
void bind_ngram(py::module_ &m);
void bind_options(py::module_ &m);

namespace {

// The one statistics serializer (options.cpp) as a dict.
py::dict stats_to_dict(const DecodeStats &s) {
    py::dict d;
    for (const auto &[key, value] : stats_fields(s)) {
        d[key.c_str()] = std::visit([](const auto &v) { return py::cast(v); }, value);
    }
    return d;
}

std::vector<int32_t> to_ids(const std::vector<int64_t> &ids) {
    std::vector<int32_t> out;
    out.reserve(ids.size());
    for (int64_t id : ids) {
        if (id < INT32_MIN || id > INT32_MAX) throw Error("invalid token id " + std::to_string(id));
        out.push_back(static_cast<int32_t>(id));
    }
    return out;
}

py::array_t<float> to_array(std::vector<float> &&data, std::vector<py::ssize_t> shape) {
    auto *owner = new std::vector<float>(std::move(data));
    py::capsule free_owner(owner, [](void *p) { delete static_cast<std::vector<float> *>(p); });
    return py::array_t<float>(shape, owner->data(), free_owner);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "adadecode engine (C++ over ggml)";
    static py::exception<Error> error(m, "Error", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error &e) {
            // Messages quote names read from the file; invalid UTF-8 there must not turn into a UnicodeDecodeError.
            py::set_error(error, unicode::sanitize_utf8(e.what()).c_str());
        }
    });

    m.def("list_devices", [] {
        py::list out;
        for (const DeviceInfo &d : list_devices()) {
            py::dict item;
            item["name"] = d.name;
            item["description"] = d.description;
            item["kind"] = d.kind;
            out.append(item);
        }
        return out;
    }, "The ggml devices of this build: dicts with name, description and kind (cpu, gpu, igpu, accel).");
    m.def("default_thread_count", &default_thread_count,
          "Threads a model runs with when given none: one per physical core among the CPUs this process may run on, "
          "within its cgroup's CPU quota.");
    m.def("has_gpu", &has_gpu, "True when this build of ggml has a GPU device.");
    m.def("two_row_kernel", &qmatmul_two_row_kernel,
          "Which of our matmul kernels two activation rows go through in this process: 2 or 3 (the three-row one, "
          "the second row repeated; same results): 2 unless ADADECODE_QMATMUL_TWO_ROWS=3 or set_two_row_kernel(3).");
    m.def("matmul_family", &qmatmul_family,
          "Our matmul kernel family in this process (avx512vnni, avx512, avxvnni, avx2, neondot, neon; 'off': "
          "ggml's): the widest the CPU has unless ADADECODE_QMATMUL names another.");
    m.def("attention_family", &cpu_attention_family,
          "Our CPU attention kernel in this process: the widest the CPU has unless ADADECODE_ATTENTION names another.");
    m.def("prefetch_min_rows", &qmatmul_prefetch_min_rows,
          "From how many activation rows the x86 packed matmul kernels prefetch their weights: 1 on Intel, 3 on other "
          "CPUs, unless ADADECODE_QMATMUL_PREFETCH_ROWS sets it; 0 where none does (aarch64, the kernel off).");
    m.def("q4_k_scale", &qmatmul_q4_k_scale,
          "How the AVX-512 VNNI Q4_K matmul kernel applies its scales in this process: 'dpwssd' on Intel, 'mulld' on "
          "other CPUs, unless ADADECODE_QMATMUL_Q4K_SCALE sets it (same results); '' where that kernel is not in use.");
    m.def("q4_k_high_nibbles", &qmatmul_q4_k_high_nibbles,
          "How the VNNI Q4_K matmul kernels take the weights' high nibbles in this process: 'gfni' on Intel CPUs with "
          "GFNI, 'shift' elsewhere, unless ADADECODE_QMATMUL_GFNI sets it (same results); '' where neither is in use.");
    // pybind11 raises qmatmul_set_two_row_kernel's std::invalid_argument as ValueError.
    m.def("set_two_row_kernel", &qmatmul_set_two_row_kernel, py::arg("width"),
          "Sets two_row_kernel() for this process (2 or 3), e.g. to time one against the other.");
    m.def("rpc_available", &rpc_available, "True when this build has ggml's RPC backend (ADADECODE_RPC).");
    m.def("rpc_protocol_version", &rpc_protocol_version, "The RPC protocol version this build speaks.");
    m.def("rpc_add_server", &rpc_add_server, py::arg("endpoint"), py::arg("timeout_s") = 10.0,
          py::call_guard<py::gil_scoped_release>(),
          "Connect to an rpc-server at host:port and register its devices; returns their names.");
    m.def("rpc_device_names", &rpc_device_names, "The devices of every RPC server added so far, in order.");
    m.def("rpc_serve",
          [](const std::string &host, int port, int n_threads, const std::string &device, size_t mem_mib) {
              RpcServerOptions o;
              o.host = host;
              o.port = port;
              o.n_threads = n_threads;
              o.device = device;
              o.mem_mib = mem_mib;
              py::gil_scoped_release release;
              rpc_serve(o);
          },
          py::arg("host"), py::arg("port"), py::arg("n_threads") = 0, py::arg("device") = "", py::arg("mem_mib") = 0,
          "Serve this host's device to RPC clients; runs until the process ends, raises if it cannot start.");

    bind_vocab(m);
    bind_quantize(m);
    bind_ngram(m);
    bind_options(m);

    py::class_<Engine>(m, "Engine")
        .def(py::init([](const std::string &path, int n_ctx, int n_threads, const std::string &heads, bool repack,
                         const std::string &device, const std::vector<std::string> &split_devices,
                         const std::vector<float> &tensor_split) {
                 EngineOptions o;
                 o.repack = repack;
                 o.device = device;
                 o.split_devices = split_devices;
                 o.tensor_split = tensor_split;
                 o.n_ctx = n_ctx;
                 o.n_threads = n_threads;
                 o.heads_path = heads;
                 py::gil_scoped_release release;
                 return std::make_unique<Engine>(path, o);
             }),
             py::arg("path"), py::arg("n_ctx") = 4096, py::arg("n_threads") = 0, py::arg("heads") = "",
             py::arg("repack") = false, py::arg("device") = "", py::arg("split_devices") = std::vector<std::string>{},
             py::arg("tensor_split") = std::vector<float>{})
        .def_property_readonly("arch", [](const Engine &e) { return e.hparams().arch; })
        .def_property_readonly("n_layer", [](const Engine &e) { return e.hparams().n_layer; })
        .def_property_readonly("n_embd", [](const Engine &e) { return e.hparams().n_embd; })
        .def_property_readonly("n_vocab", [](const Engine &e) { return e.hparams().n_vocab; })
        .def_property_readonly("n_ctx_train", [](const Engine &e) { return e.hparams().n_ctx_train; })
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("n_threads", &Engine::n_threads)
        .def_property_readonly("threads_in_use", &Engine::threads_in_use)
        .def_property_readonly("device", &Engine::device)
        .def_property_readonly(
            "split",
            [](const Engine &e) {
                py::list out;
                for (const LayerRange &r : e.model().split()) {
                    out.append(py::make_tuple(std::string(ggml_backend_dev_name(r.device)), r.layer_begin, r.layer_end));
                }
                return out;
            },
            "For a model split across devices, (device, layer_begin, layer_end) per range; empty otherwise.")
        .def_property_readonly("n_repacked", [](const Engine &e) { return e.model().n_repacked(); })
        .def_property_readonly("packed_bytes", [](const Engine &e) { return e.model().packed_bytes(); })
        .def_property_readonly("vocab", &Engine::vocab, py::return_value_policy::reference_internal)
        .def_property_readonly("exit_layers",
                               [](const Engine &e) { return e.heads() ? e.heads()->layers() : std::vector<int>{}; })
        .def_property_readonly("heads_path",
                               [](const Engine &e) { return e.heads() ? e.heads()->path() : std::string(); })
        .def("load_heads", &Engine::load_heads, py::arg("path"), py::call_guard<py::gil_scoped_release>())
        .def("trace_passes", &Engine::trace_passes, py::arg("on"),
             "Record every forward pass from now on (False: stop); tracing changes no pass.")
        .def(
            "take_pass_trace",
            [](Engine &e) {
                py::list out;
                for (const PassTrace &t : e.take_pass_trace()) {
                    py::dict d;
                    d["layer_begin"] = t.layer_begin;
                    d["layer_end"] = t.layer_end;
                    d["rows"] = t.n_rows;
                    d["pos0"] = t.pos0;
                    d["logit_rows"] = t.logit_rows;
                    d["head"] = t.head;
                    d["prompt"] = t.prompt;
                    d["seconds"] = t.seconds;
                    out.append(d);
                }
                return out;
            },
            "The passes recorded since trace_passes(True) (dicts: layer_begin, layer_end, rows, pos0, logit_rows, "
            "head, prompt, seconds); forgets them.")
        .def("time_pass", &Engine::time_pass, py::arg("layer_begin"), py::arg("layer_end"), py::arg("rows"),
             py::arg("position"), py::arg("logit_rows") = 0, py::arg("head") = false, py::arg("reps") = 10,
             py::call_guard<py::gil_scoped_release>(),
             "Seconds of each of `reps` passes over layers [layer_begin, layer_end) for `rows` rows at `position`.")
        .def(
            "generate",
            [](Engine &e, const std::vector<int64_t> &prompt, const DecodeOptions &options,
               const std::function<bool(int, const std::string &)> &callback, bool return_logits,
               const py::object &logits_processor) {
                DecodeOptions o = options;  // the logits' recording and the processor belong to this call
                std::vector<float> recorded;
                if (return_logits)
                    o.record_logits = &recorded;
                const std::vector<int32_t> ids = to_ids(prompt);
                StreamDecoder text(e.vocab(), false);
                std::exception_ptr callback_error;
                const int n_vocab = e.hparams().n_vocab;
                if (!logits_processor.is_none()) {
                    // processor(context ids, logits) edits the logits in place; both arrays are views, valid only
                    // during the call. An exception aborts the generation and is raised from generate().
                    o.logits_processor = [&](const int32_t *context, int n_context, float *logits) {
                        py::gil_scoped_acquire acquire;
                        py::capsule no_owner(logits, [](void *) {});
                        py::array_t<int32_t> context_view({n_context}, {sizeof(int32_t)}, context, no_owner);
                        py::array_t<float> logits_view({n_vocab}, {sizeof(float)}, logits, no_owner);
                        reinterpret_cast<py::detail::PyArray_Proxy *>(context_view.ptr())->flags &=
                            ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
                        logits_processor(context_view, logits_view);
                    };
                }
                DecodeResult r;
                {
                    py::gil_scoped_release release;
                    r = e.generate(ids, o, [&](int32_t token) {
                        const std::string piece = text.push(token);
                        py::gil_scoped_acquire acquire;
                        try {
                            // Ctrl-C arrives as a pending signal while the GIL was released.
                            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                            return !callback || callback(token, piece);
                        } catch (...) {
                            callback_error = std::current_exception();
                            return false;
                        }
                    });
                }
                if (callback_error)
                    std::rethrow_exception(callback_error);
                py::dict d;
                d["tokens"] = r.tokens;
                d["finish_reason"] = r.finish_reason;
                d["token_sources"] = r.token_sources;
                d["tail"] = text.flush();
                d["stats"] = stats_to_dict(r.stats);
                if (return_logits) {
                    const py::ssize_t rows = static_cast<py::ssize_t>(recorded.size() / e.hparams().n_vocab);
                    d["logits"] = to_array(std::move(recorded), {rows, e.hparams().n_vocab});
                }
                return d;
            },
            py::arg("prompt"), py::arg("options") = DecodeOptions(), py::arg("callback") = nullptr,
            py::arg("return_logits") = false, py::arg("logits_processor") = py::none(),
            "Generate after the prompt ids with `options` (a DecodeOptions); callback(token, text_piece) -> bool is "
            "called for each verified token.")
        .def_property_readonly("cached_tokens", &Engine::cached_tokens,
                               "Tokens whose KV entries the cache holds (the next generation reuses their common "
                               "prefix with its prompt).")
        .def("reset", &Engine::reset, "Forget the cache: the next generation prefills its whole prompt.")
        .def(
            "save_state",
            [](const Engine &e) {
                std::string bytes;
                {
                    py::gil_scoped_release release;
                    bytes = e.save_state();
                }
                return py::bytes(bytes);
            },
            "The cached tokens and their KV entries as bytes, for load_state on this model with the same n_ctx.")
        .def(
            "load_state",
            [](Engine &e, const py::bytes &data) {
                std::string bytes = data;
                py::gil_scoped_release release;
                e.load_state(bytes);
            },
            py::arg("state"), "Restore a state from save_state; refuses corrupt bytes and other models' states.")
        .def_property_readonly("fingerprint", &Engine::fingerprint,
                               "A 64-bit hash identifying the model's weights (saved states carry it).")
        .def(
            "hidden_states",
            [](Engine &e, const std::vector<int64_t> &ids, const std::vector<int> &layers) {
                const std::vector<int32_t> tokens = to_ids(ids);
                std::vector<float> h;
                {
                    py::gil_scoped_release release;
                    h = e.hidden_states(tokens, layers);
                }
                return to_array(std::move(h), {static_cast<py::ssize_t>(layers.size()),
                                               static_cast<py::ssize_t>(tokens.size()), e.hparams().n_embd});
            },
            py::arg("ids"), py::arg("layers"))
        .def(
            "head_logits",
            [](Engine &e, int index, const py::array_t<float, py::array::c_style | py::array::forcecast> &hidden) {
                if (hidden.ndim() != 2 || hidden.shape(1) != e.hparams().n_embd) {
                    throw Error("head_logits: hidden must be a [rows, " + std::to_string(e.hparams().n_embd) +
                                "] array");
                }
                const int rows = static_cast<int>(hidden.shape(0));
                std::vector<float> h(hidden.data(), hidden.data() + hidden.size());
                std::vector<float> l;
                {
                    py::gil_scoped_release release;
                    l = e.head_logits(index, h, rows);
                }
                const py::ssize_t k = e.heads() ? e.heads()->head_vocab_size() : 0;
                return to_array(std::move(l), {static_cast<py::ssize_t>(rows), k});
            },
            py::arg("index"), py::arg("hidden"),
            "Exit head `index`'s logits over its vocabulary for each row of `hidden` [rows, n_embd].")
        .def(
            "logits",
            [](Engine &e, const std::vector<int64_t> &ids) {
                const std::vector<int32_t> tokens = to_ids(ids);
                std::vector<float> l;
                {
                    py::gil_scoped_release release;
                    l = e.logits(tokens);
                }
                return to_array(std::move(l), {static_cast<py::ssize_t>(tokens.size()), e.hparams().n_vocab});
            },
            py::arg("ids"))
        .def(
            "tensor",
            [](const Engine &e, const std::string &name) {
                std::vector<int64_t> ne;
                std::vector<float> data = e.model().dequantize(name, &ne);
                std::vector<py::ssize_t> shape(ne.rbegin(), ne.rend());  // row-major: slowest dimension first
                return to_array(std::move(data), shape);
            },
            py::arg("name"), "A weight tensor dequantized to float32, shaped like the PyTorch weight.")
        .def("tensor_names", [](const Engine &e) {
            std::vector<std::string> names;
            for (const auto &t : e.model().file().tensors()) names.push_back(t.name);
            return names;
        });
}
