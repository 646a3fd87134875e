// Round trip of a cache line between CPU 0 and CPU 1 (an atomic bounced) and a streaming read on 1 and 2 threads: on a
// VM, whether its two vCPUs sit on one Zen 4 CCD (one link to memory) or not. Experiment, not built by CMake:
//   g++ -O2 -march=native -pthread -o ccd_probe ccd_probe.cpp && ./ccd_probe
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <thread>
#include <vector>
static void pin(int cpu) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
alignas(64) std::atomic<int> flag{0};
double roundtrip_ns(int iters) {
    flag = 0;
    std::thread t([&] { pin(1); for (int i = 0; i < iters; ++i) { while (flag.load(std::memory_order_acquire) != 2 * i + 1) {} flag.store(2 * i + 2, std::memory_order_release); } });
    pin(0);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) { flag.store(2 * i + 1, std::memory_order_release); while (flag.load(std::memory_order_acquire) != 2 * i + 2) {} }
    auto t1 = std::chrono::steady_clock::now();
    t.join();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / iters;
}
double read_gbs(const char *buf, size_t bytes, int threads) {
    std::vector<std::thread> ts; std::atomic<long> sink{0};
    auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < threads; ++k) ts.emplace_back([&, k] { pin(k); const char *p = buf + bytes / threads * k; __m512i acc = _mm512_setzero_si512();
        for (size_t i = 0; i < bytes / threads; i += 64) acc = _mm512_xor_si512(acc, _mm512_load_si512(p + i));
        sink += _mm512_reduce_add_epi64(acc); });
    for (auto &t : ts) t.join();
    return bytes / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
}
int main(int argc, char **argv) {
    size_t bytes = size_t(1) << 30;
    char *buf = static_cast<char *>(aligned_alloc(64, bytes)); memset(buf, 1, bytes);
    double rt = 1e9; for (int r = 0; r < 5; ++r) rt = std::min(rt, roundtrip_ns(200000));
    double r1 = 0, r2 = 0; for (int r = 0; r < 3; ++r) { r1 = std::max(r1, read_gbs(buf, bytes, 1)); r2 = std::max(r2, read_gbs(buf, bytes, 2)); }
    printf("roundtrip %.0f ns  read 1 thread %.1f GB/s  2 threads %.1f GB/s\n", rt, r1, r2);
}
