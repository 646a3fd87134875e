#include "device.h"

#include <algorithm>
#include <cctype>

#include "error.h"

namespace adadecode {

namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

// ggml's RPC devices present themselves as GPUs whatever the server serves: they are "rpc" here, never "the GPU".
bool is_remote(ggml_backend_dev_t dev) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    return reg && std::string(ggml_backend_reg_name(reg)) == "RPC";
}

const char *kind_name(ggml_backend_dev_t dev) {
    if (is_remote(dev)) return "rpc";
    switch (ggml_backend_dev_type(dev)) {
    case GGML_BACKEND_DEVICE_TYPE_CPU:
        return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU:
        return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU:
        return "igpu";
    default:
        return "accel";
    }
}

bool is_gpu(ggml_backend_dev_t dev) {
    if (is_remote(dev)) return false;
    const enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
    return t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU;
}

std::string available() {
    std::string out;
    for (const DeviceInfo &d : list_devices()) out += (out.empty() ? "" : ", ") + d.name;
    return out;
}

}  // namespace

std::vector<DeviceInfo> list_devices() {
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        out.push_back({ggml_backend_dev_name(dev), ggml_backend_dev_description(dev),
                       kind_name(dev)});
    }
    return out;
}

bool has_gpu() {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        if (is_gpu(ggml_backend_dev_get(i))) return true;
    }
    return false;
}

ggml_backend_dev_t find_device(const std::string &name) {
    if (name.empty()) return nullptr;
    const std::string wanted = lower(name);
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if ((wanted == "gpu" && is_gpu(dev)) || lower(ggml_backend_dev_name(dev)) == wanted) return dev;
    }
    if (wanted == "gpu") {
        throw Error("no GPU device: this build of ggml has none (available: " + available() +
                    "); build against a ggml source tree with -DGGML_CUDA=ON, see the README");
    }
    throw Error("unknown device '" + name + "' (available: " + available() + ", or gpu for the first GPU)");
}

}  // namespace adadecode
