#include "layer_split.h"

#include <algorithm>
#include <cmath>

#include "error.h"

namespace adadecode {

std::vector<LayerRange> split_layers(int n_layer, const std::vector<ggml_backend_dev_t> &devices,
                                     const std::vector<float> &proportions) {
    if (proportions.size() != devices.size()) {
        throw Error("tensor_split has " + std::to_string(proportions.size()) + " entries but there are " +
                    std::to_string(devices.size()) + " devices (the local CPU, then each RPC server's)");
    }
    double total = 0.0;
    int n_used = 0;
    for (float p : proportions) {
        if (!std::isfinite(p) || p < 0.0f) {
            throw Error("tensor_split values must be finite and >= 0, got " + std::to_string(p));
        }
        total += p;
        n_used += p > 0.0f;
    }
    if (n_used == 0) throw Error("tensor_split gives no device a share (all values are 0)");
    if (n_used > n_layer) {
        throw Error("cannot split " + std::to_string(n_layer) + " layers across " + std::to_string(n_used) +
                    " devices: each needs at least one whole layer");
    }
    std::vector<LayerRange> out;
    double cumulative = 0.0;
    int begin = 0, remaining = n_used;
    for (size_t i = 0; i < devices.size(); ++i) {
        if (proportions[i] <= 0.0f) continue;
        cumulative += proportions[i];
        --remaining;
        // At least one layer here, and one left for each later device with a share.
        int end = static_cast<int>(std::lround(n_layer * cumulative / total));
        end = std::clamp(end, begin + 1, n_layer - remaining);
        if (remaining == 0) end = n_layer;
        out.push_back(LayerRange{devices[i], begin, end});
        begin = end;
    }
    return out;
}

std::vector<float> free_memory_proportions(const std::vector<ggml_backend_dev_t> &devices) {
    std::vector<float> out;
    float largest = 0.0f;
    for (ggml_backend_dev_t dev : devices) {
        size_t free_bytes = 0, total_bytes = 0;
        ggml_backend_dev_memory(dev, &free_bytes, &total_bytes);
        out.push_back(static_cast<float>(free_bytes) / (1 << 20));
        largest = std::max(largest, out.back());
    }
    for (float &p : out) {
        if (p <= 0.0f) p = largest > 0.0f ? largest : 1.0f;
    }
    return out;
}

}  // namespace adadecode
