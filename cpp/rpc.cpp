#include "rpc.h"

#include "error.h"

#ifndef ADADECODE_HAVE_RPC

namespace adadecode {

namespace {
[[noreturn]] void no_rpc() {
    throw Error("this build of adadecode has no RPC backend: rebuild with the CMake option ADADECODE_RPC=ON "
                "(`pip install . -C cmake.define.ADADECODE_RPC=ON`; it needs ggml's source, see docs/rpc.md)");
}
}  // namespace

bool rpc_available() { return false; }
std::vector<std::string> rpc_add_server(const std::string &, double) { no_rpc(); }
std::vector<std::string> rpc_device_names() { return {}; }
void rpc_serve(const RpcServerOptions &) { no_rpc(); }
std::string rpc_protocol_version() { no_rpc(); }

}  // namespace adadecode

#else

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "cpu_threads.h"
#include "device.h"
#include "ggml-backend-impl.h"  // the build's own ggml source (ggml/rpc.cmake): same version as the linked ggml
#include "ggml-rpc.h"

namespace {

// The sockets of ggml's RPC client whose connection failed (a send or receive error, or the peer closed it). From
// then on they carry nothing and read as zeros: every reply then comes back with the size 0, which ggml's client
// takes as success only for the commands that have no reply (freeing a buffer: so a model on a dead server can be
// dropped) and as a failure for all others (ggml_abort below: an Error). A socket never fails the send itself, so
// that ggml never aborts half-way through a command, but it fails the reply.
std::mutex g_broken_mutex;
std::set<int> g_broken_fds;

bool is_broken(int fd) {
    std::lock_guard<std::mutex> lock(g_broken_mutex);
    return g_broken_fds.count(fd) != 0;
}

void mark_broken(int fd) {
    std::lock_guard<std::mutex> lock(g_broken_mutex);
    g_broken_fds.insert(fd);
}

}  // namespace

// transport.cpp and ggml-rpc.cpp call these in place of send, recv, close and ggml_abort (ggml/rpc.cmake).
extern "C" {

ssize_t adadecode_rpc_send(int fd, const void *data, size_t n, int flags) {
    if (is_broken(fd)) return static_cast<ssize_t>(n);  // the connection is gone: nothing to send it to
    const ssize_t k = ::send(fd, data, n, flags | MSG_NOSIGNAL);  // a dead peer is an error, not SIGPIPE
    if (k < 0 && errno == EINTR) return k;
    if (k <= 0) {
        mark_broken(fd);
        return static_cast<ssize_t>(n);  // the command's reply (below) tells the client it failed
    }
    return k;
}

ssize_t adadecode_rpc_recv(int fd, void *data, size_t n, int flags) {
    if (is_broken(fd)) {
        std::memset(data, 0, n);  // an empty reply: right for a command without one, an error for the rest
        return static_cast<ssize_t>(n);
    }
    const ssize_t k = ::recv(fd, data, n, flags);
    if (k < 0 && errno == EINTR) return k;
    if (k <= 0) {
        mark_broken(fd);
        std::memset(data, 0, n);
        return static_cast<ssize_t>(n);
    }
    return k;
}

int adadecode_rpc_close(int fd) {
    {
        std::lock_guard<std::mutex> lock(g_broken_mutex);
        g_broken_fds.erase(fd);
    }
    return ::close(fd);
}

[[noreturn]] void adadecode_rpc_abort(const char *file, int line, const char *fmt, ...) {
    char message[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    const std::string what = std::string("RPC failure: ") + message +
                             " (the rpc-server was stopped, crashed or became unreachable) [" + file + ":" +
                             std::to_string(line) + "]";
    if (std::uncaught_exceptions() == 0) throw adadecode::Error(what);
    std::fprintf(stderr, "adadecode: %s\n", what.c_str());
    std::abort();
}

}  // extern "C"

namespace adadecode {

namespace {

struct Endpoint {
    std::string host;
    int port = 0;
};

Endpoint parse_endpoint(const std::string &endpoint) {
    const size_t colon = endpoint.rfind(':');
    Endpoint e;
    if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size()) {
        throw Error("bad RPC server '" + endpoint + "': expected host:port, e.g. 127.0.0.1:50052");
    }
    e.host = endpoint.substr(0, colon);
    const std::string port = endpoint.substr(colon + 1);
    char *end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (*end != '\0' || p < 1 || p > 65535) throw Error("bad port in RPC server '" + endpoint + "'");
    if (e.host.find(':') != std::string::npos) {
        throw Error("bad RPC server '" + endpoint + "': ggml's RPC client takes an IPv4 address or host name");
    }
    e.port = static_cast<int>(p);
    return e;
}

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

using Clock = std::chrono::steady_clock;

std::string seconds(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g s", s);
    return buf;
}

int ms_left(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

// Sends or receives exactly n bytes before the deadline; false on timeout, error or EOF (errno 0 for EOF).
bool transfer(int fd, void *data, size_t n, bool send, Clock::time_point deadline) {
    char *p = static_cast<char *>(data);
    while (n > 0) {
        pollfd pfd{fd, static_cast<short>(send ? POLLOUT : POLLIN), 0};
        const int ready = ::poll(&pfd, 1, ms_left(deadline));
        if (ready == 0) {
            errno = ETIMEDOUT;
            return false;
        }
        if (ready < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        const ssize_t k = send ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
        if (k == 0) errno = 0;
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            return false;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

// Before handing the endpoint to ggml (whose connect and handshake wait without limit, and abort the process on a
// dropped connection), check within the timeout that a server listens there, answers the handshake, and speaks this
// protocol version. Our own HELLO, then the connection is closed: the server then waits for the next client.
void probe(const std::string &endpoint, double timeout_s) {
    const Endpoint e = parse_endpoint(endpoint);
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
    const std::string where = "rpc-server " + endpoint;
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *found = nullptr;
    if (const int rc = ::getaddrinfo(e.host.c_str(), std::to_string(e.port).c_str(), &hints, &found); rc != 0) {
        throw Error("cannot resolve " + where + ": " + ::gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addrs(found, ::freeaddrinfo);
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw Error("cannot open a socket: " + std::string(std::strerror(errno)));
    if (::connect(fd.get(), addrs->ai_addr, addrs->ai_addrlen) != 0 && errno != EINPROGRESS) {
        throw Error("cannot reach " + where + ": " + std::strerror(errno) +
                    " (is `adadecode rpc-server` running there?)");
    }
    pollfd pfd{fd.get(), POLLOUT, 0};
    if (::poll(&pfd, 1, ms_left(deadline)) <= 0) {
        throw Error("cannot reach " + where + ": no answer within " + seconds(timeout_s));
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        throw Error("cannot reach " + where + ": " + std::strerror(err) +
                    " (is `adadecode rpc-server` running there?)");
    }
    // HELLO (command 14): | cmd u8 | size u64 | 24 bytes of transport capabilities (none) |
    // reply: | size u64 | major u8 minor u8 patch u8 pad u8 | 24 bytes |
    unsigned char request[1 + 8 + 24] = {14};
    const uint64_t request_size = 24;
    std::memcpy(request + 1, &request_size, 8);
    uint64_t reply_size = 0;
    unsigned char reply[28] = {};
    const std::string ours = rpc_protocol_version();
    if (!transfer(fd.get(), request, sizeof request, true, deadline) ||
        !transfer(fd.get(), &reply_size, 8, false, deadline)) {
        if (errno == ETIMEDOUT) {
            throw Error(where + " accepted the connection but did not answer the handshake within " +
                        seconds(timeout_s) + " (it serves one client at a time: is another one connected?)");
        }
        throw Error(where + " closed the connection during the handshake: it likely speaks another RPC protocol "
                    "version than this build's " + ours + " (build both from the same ggml version)");
    }
    if (reply_size != sizeof reply || !transfer(fd.get(), reply, sizeof reply, false, deadline)) {
        throw Error(where + " answered the handshake in another RPC protocol than this build's " + ours);
    }
    if (reply[0] != RPC_PROTO_MAJOR_VERSION || reply[1] > RPC_PROTO_MINOR_VERSION) {
        throw Error(where + " speaks RPC protocol " + std::to_string(reply[0]) + "." + std::to_string(reply[1]) + "." +
                    std::to_string(reply[2]) + ", this build " + ours + " (build both from the same ggml version)");
    }
}

std::mutex g_mutex;
std::map<std::string, std::vector<std::string>> g_servers;  // endpoint -> its device names
std::vector<std::string> g_order;

// --mem: the served device reports this much memory (free and total) to clients, which size their split by it.
struct MemDevice {
    ggml_backend_device dev;
    ggml_backend_device_i real;  // the wrapped device's own interface
    size_t bytes;
};
MemDevice *g_mem_device = nullptr;

void mem_get_memory(ggml_backend_dev_t, size_t *free, size_t *total) { *free = *total = g_mem_device->bytes; }

void mem_get_props(ggml_backend_dev_t dev, ggml_backend_dev_props *props) {
    g_mem_device->real.get_props(dev, props);
    props->memory_free = props->memory_total = g_mem_device->bytes;
}

// The server asks the backend for its device when a client asks for memory: make that the wrapper.
ggml_backend_t mem_init_backend(ggml_backend_dev_t dev, const char *params) {
    ggml_backend_t backend = g_mem_device->real.init_backend(dev, params);
    if (backend) backend->device = dev;
    return backend;
}

}  // namespace

bool rpc_available() { return true; }

std::string rpc_protocol_version() {
    return std::to_string(RPC_PROTO_MAJOR_VERSION) + "." + std::to_string(RPC_PROTO_MINOR_VERSION) + "." +
           std::to_string(RPC_PROTO_PATCH_VERSION);
}

std::vector<std::string> rpc_add_server(const std::string &endpoint, double timeout_s) {
    if (!(timeout_s > 0)) throw Error("RPC connect timeout must be > 0 s");
    std::lock_guard<std::mutex> lock(g_mutex);
    if (auto it = g_servers.find(endpoint); it != g_servers.end()) return it->second;
    probe(endpoint, timeout_s);
    ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
    if (!reg) throw Error("rpc-server " + endpoint + " serves no device");
    ggml_backend_register(reg);
    std::vector<std::string> names;
    for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) {
        names.emplace_back(ggml_backend_dev_name(ggml_backend_reg_dev_get(reg, i)));
    }
    g_servers[endpoint] = names;
    g_order.push_back(endpoint);
    return names;
}

std::vector<std::string> rpc_device_names() {
    std::lock_guard<std::mutex> lock(g_mutex);
    std::vector<std::string> out;
    for (const std::string &e : g_order) out.insert(out.end(), g_servers[e].begin(), g_servers[e].end());
    return out;
}

void rpc_serve(const RpcServerOptions &o) {
    if (o.port < 1 || o.port > 65535) throw Error("bad port " + std::to_string(o.port) + " (1..65535)");
    if (o.n_threads < 0) throw Error("threads must be >= 0");
    if (o.host.empty() || o.host.find(':') != std::string::npos) {
        throw Error("bad host '" + o.host + "': an IPv4 address or host name");
    }
    ggml_backend_dev_t dev = o.device.empty() ? ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
                                              : find_device(o.device);
    if (!dev) throw Error("no CPU device in this build of ggml");
    if (o.mem_mib > 0) {
        g_mem_device = new MemDevice{*dev, dev->iface, o.mem_mib * 1024 * 1024};  // lives as long as the process
        g_mem_device->dev.iface.get_memory = mem_get_memory;
        g_mem_device->dev.iface.get_props = mem_get_props;
        g_mem_device->dev.iface.init_backend = mem_init_backend;
        dev = &g_mem_device->dev;
    }
    const int threads = o.n_threads > 0 ? o.n_threads : default_thread_count();
    const std::string endpoint = o.host + ":" + std::to_string(o.port);
    // A client that disconnects mid-reply must not kill the server with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    // ggml prints its banner (endpoint, devices, then "transport" just before it listens) without flushing: on a
    // pipe or file stdout is block-buffered, so a supervisor waiting for the banner would wait forever, and the
    // process ends with _exit (the serve loop has no stop call), which drops whatever is still buffered.
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    ggml_backend_rpc_start_server(endpoint.c_str(), nullptr, static_cast<size_t>(threads), 1, &dev);
    throw Error("rpc-server could not start on " + endpoint + " (address in use, or not an address of this host?)");
}

}  // namespace adadecode

#endif
