// split_layers: whole, contiguous layer ranges per device in proportion to the shares, at least one layer per device
// with a share, and a clear Error for every bad list of shares.
#include <limits>
#include <string>
#include <vector>

#include "error.h"
#include "ggml-backend.h"
#include "layer_split.h"

#include "check.h"

using namespace adadecode;

namespace {

// The ranges as (device index, begin, end) triples flattened, for comparison.
std::vector<int> flat(const std::vector<LayerRange> &ranges, const std::vector<ggml_backend_dev_t> &devices) {
    std::vector<int> out;
    for (const LayerRange &r : ranges) {
        int index = -1;
        for (size_t i = 0; i < devices.size(); ++i) {
            if (devices[i] == r.device) index = static_cast<int>(i);
        }
        out.insert(out.end(), {index, r.layer_begin, r.layer_end});
    }
    return out;
}

bool refused(int n_layer, const std::vector<ggml_backend_dev_t> &devices, const std::vector<float> &shares,
             const std::string &message) {
    try {
        split_layers(n_layer, devices, shares);
    } catch (const Error &e) {
        return std::string(e.what()).find(message) != std::string::npos;
    }
    return false;
}

}  // namespace

int main() {
    // split_layers only compares device handles: any distinct addresses stand in for devices.
    static int a, b, c;
    const std::vector<ggml_backend_dev_t> devs = {reinterpret_cast<ggml_backend_dev_t>(&a),
                                                  reinterpret_cast<ggml_backend_dev_t>(&b),
                                                  reinterpret_cast<ggml_backend_dev_t>(&c)};
    CHECK(flat(split_layers(30, devs, {1, 1, 1}), devs) == (std::vector<int>{0, 0, 10, 1, 10, 20, 2, 20, 30}));
    CHECK(flat(split_layers(30, devs, {1, 2, 1}), devs) == (std::vector<int>{0, 0, 8, 1, 8, 23, 2, 23, 30}));
    CHECK(flat(split_layers(24, devs, {0, 1, 1}), devs) == (std::vector<int>{1, 0, 12, 2, 12, 24}));
    CHECK(flat(split_layers(24, devs, {0, 0, 5}), devs) == (std::vector<int>{2, 0, 24}));
    // A tiny share still gets one layer; a huge one leaves one for each later device.
    CHECK(flat(split_layers(3, devs, {1000, 1, 1}), devs) == (std::vector<int>{0, 0, 1, 1, 1, 2, 2, 2, 3}));
    CHECK(flat(split_layers(10, devs, {0.001f, 1, 1}), devs) == (std::vector<int>{0, 0, 1, 1, 1, 5, 2, 5, 10}));
    CHECK(flat(split_layers(3, devs, {1, 1, 1}), devs) == (std::vector<int>{0, 0, 1, 1, 1, 2, 2, 2, 3}));

    CHECK(refused(30, devs, {1, 1}, "tensor_split has 2 entries but there are 3 devices"));
    CHECK(refused(30, devs, {1, -1, 1}, "finite and >= 0"));
    CHECK(refused(30, devs, {1, std::numeric_limits<float>::infinity(), 1}, "finite and >= 0"));
    CHECK(refused(30, devs, {0, 0, 0}, "all values are 0"));
    CHECK(refused(2, devs, {1, 1, 1}, "cannot split 2 layers across 3 devices"));
    CHECK(!refused(2, devs, {1, 0, 1}, ""));

    if (g_failures) std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return g_failures ? 1 : 0;
}
