// How a model's layers are shared out between devices: whole, contiguous ranges in proportion to given weights
// (--tensor-split) or to each device's free memory.
#pragma once

#include <vector>

#include "model.h"

namespace adadecode {

// Ranges covering [0, n_layer) in device order, one per device with a positive proportion (a device given 0 gets no
// layers). Each such device gets at least one layer; otherwise the boundaries are the cumulative proportions
// rounded to whole layers. Throws Error for a proportions list of the wrong length, negative or non-finite values,
// all zeros, or more devices with a share than layers.
std::vector<LayerRange> split_layers(int n_layer, const std::vector<ggml_backend_dev_t> &devices,
                                     const std::vector<float> &proportions);

// The free memory each device reports, as proportions (a device reporting none counts as much as the largest).
std::vector<float> free_memory_proportions(const std::vector<ggml_backend_dev_t> &devices);

}  // namespace adadecode
