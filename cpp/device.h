// Which ggml backend device runs the model. By default none is chosen: the CPU computes straight from the mmapped
// file with our own matmul kernel. Naming a device (a GPU, or "CPU" itself) copies the weights into that device's
// memory and runs ggml's kernels there, the way any ggml backend is driven.
#pragma once

#include <string>
#include <vector>

#include "ggml-backend.h"

namespace adadecode {

struct DeviceInfo {
    std::string name;         // as ggml names it: "CPU", "CUDA0", ...
    std::string description;  // e.g. the GPU's model
    std::string kind;         // "cpu", "gpu", "igpu", "accel", or "rpc" (another host's, see rpc.h)
};

// Every device of every backend this build of ggml registered.
std::vector<DeviceInfo> list_devices();

// True when some GPU (discrete or integrated) is available.
bool has_gpu();

// "" -> nullptr (the default mmapped CPU path); "gpu" -> the first GPU; otherwise the device of that name
// (case-insensitive). Throws Error naming the available devices when there is no such device.
ggml_backend_dev_t find_device(const std::string &name);

}  // namespace adadecode
