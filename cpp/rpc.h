// ggml's RPC backend: serve this host's devices to other hosts, or compute on another host's devices. Compiled in
// only with the build option ADADECODE_RPC (ggml/rpc.cmake); without it every entry point but rpc_available()
// throws an Error naming that option.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace adadecode {

bool rpc_available();

// Connects to the rpc-server at "host:port" (checking within timeout_s that it answers and speaks this build's
// protocol), adds its devices to ggml's device registry and returns their names ("RPC0", ...). A server added
// before returns the same names. Throws Error naming the endpoint and the cause.
std::vector<std::string> rpc_add_server(const std::string &endpoint, double timeout_s = 10.0);

// The device names of every server rpc_add_server registered, in order.
std::vector<std::string> rpc_device_names();

struct RpcServerOptions {
    std::string host = "127.0.0.1";
    int port = 50052;
    int n_threads = 0;        // 0: every online core
    std::string device;       // "" : the CPU
    std::size_t mem_mib = 0;  // 0: the device's own memory figures; else report this much (total and free)
};

// Serves until the process ends (an rpc-server serves one client at a time). Returns only if it could not start
// (address in use, unknown device, ...), throwing Error.
void rpc_serve(const RpcServerOptions &options);

// The protocol version this build speaks, "major.minor.patch".
std::string rpc_protocol_version();

}  // namespace adadecode
