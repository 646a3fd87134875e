// pybind11 binding of ggml's own quantization for the HF -> GGUF converter: _core.quantize(rows, type) -> bytes as a
// uint8 array. The converter must produce exactly the blocks ggml (and so llama.cpp) would, so it calls
// ggml_quantize_chunk rather than re-implementing any format.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "ggml.h"

namespace py = pybind11;
using namespace adadecode;

namespace {

void check_quantizable(int type_id) {
    if (type_id < 0 || type_id >= GGML_TYPE_COUNT) {
        throw Error("unknown ggml type id " + std::to_string(type_id));
    }
    const auto type = static_cast<ggml_type>(type_id);
    if (ggml_blck_size(type) <= 0 || ggml_type_size(type) == 0) {
        throw Error(std::string("ggml type ") + ggml_type_name(type) + " is not available in this ggml");
    }
    if (ggml_quantize_requires_imatrix(type)) {
        throw Error(std::string("ggml type ") + ggml_type_name(type) + " needs an importance matrix (unsupported)");
    }
}

// Quantizes float32 rows [n_rows, n_per_row] to `type`; rows are split over threads (each chunk is independent).
py::array_t<uint8_t> quantize(const py::array_t<float, py::array::c_style | py::array::forcecast> &src, int type_id,
                              int n_threads) {
    check_quantizable(type_id);
    const auto type = static_cast<ggml_type>(type_id);
    if (src.ndim() != 2) {
        throw Error("quantize expects a 2-D array [rows, row length], got " + std::to_string(src.ndim()) + " dims");
    }
    const int64_t n_rows = src.shape(0), n_per_row = src.shape(1);
    if (n_per_row % ggml_blck_size(type) != 0) {
        throw Error("row length " + std::to_string(n_per_row) + " is not a multiple of the " + ggml_type_name(type) +
                    " block size " + std::to_string(ggml_blck_size(type)));
    }
    const size_t row_size = ggml_row_size(type, n_per_row);
    py::array_t<uint8_t> out(static_cast<py::ssize_t>(row_size * n_rows));
    const float *in = src.data();
    uint8_t *dst = out.mutable_data();
    ggml_quantize_init(type);  // not thread-safe: done once here, before the workers start
    {
        py::gil_scoped_release release;
        const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(n_threads, n_rows));
        const int64_t rows_per_thread = (n_rows + threads - 1) / threads;
        std::vector<std::thread> workers;
        std::vector<size_t> written(threads, 0);
        for (int64_t t = 0; t < threads; ++t) {
            const int64_t first = t * rows_per_thread;
            const int64_t count = std::min(rows_per_thread, n_rows - first);
            if (count <= 0) break;
            workers.emplace_back([=, &written] {
                written[t] = ggml_quantize_chunk(type, in, dst, first * n_per_row, count, n_per_row, nullptr);
            });
        }
        for (auto &w : workers) w.join();
        size_t total = 0;
        for (size_t w : written) total += w;
        if (total != row_size * n_rows) {
            throw Error("ggml_quantize_chunk wrote " + std::to_string(total) + " bytes, expected " +
                        std::to_string(row_size * n_rows));
        }
    }
    return out;
}

}  // namespace

void bind_quantize(py::module_ &m) {
    m.def("quantize", &quantize, py::arg("data"), py::arg("type"), py::arg("n_threads") = 1,
          "Quantize float32 rows [n_rows, n_per_row] to the ggml type with this id (gguf.GGMLQuantizationType) with "
          "ggml_quantize_chunk; returns the raw blocks as a flat uint8 array.");
    m.def(
        "quantize_type_info",
        [](int type_id) {
            check_quantizable(type_id);
            const auto type = static_cast<ggml_type>(type_id);
            return py::make_tuple(std::string(ggml_type_name(type)), ggml_blck_size(type), ggml_type_size(type));
        },
        py::arg("type"), "(name, block size, bytes per block) of a ggml type that quantize() accepts.");
}
