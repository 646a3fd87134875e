// The thread count under other programs' load (thread_governor.h): /proc/stat read on made-up files, other programs'
// share of the CPUs, the policy on sequences of readings (drops at once, rises after two windows in a row),
// and then, on SmolLM2 (skipped without it), that a Forward switching its thread count between passes gives the same
// logits bitwise as one that never does, for one-row and four-row passes.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "adadecode/error.h"
#include "cached_model.h"
#include "check.h"
#include "forward.h"
#include "thread_governor.h"

using namespace adadecode;
namespace fs = std::filesystem;

namespace {

bool near(double a, double b) {
    return std::abs(a - b) < 1e-9;
}

void check_proc_stat(const fs::path &dir) {
    const fs::path stat = dir / "stat";
    std::ofstream(stat) << "cpu  900 50 300 5000 10 0 5 2 0 0\n"
                           "cpu0 100 10 40 2000 5 0 1 1 0 0\n"
                           "cpu1 200 20 60 2000 5 0 2 0 0 0\n"
                           "cpu12 400 0 100 1000 0 0 0 0 0 0\n"
                           "intr 12345 0 0\n"
                           "ctxt 999\n";
    CpuTimes t;
    // cpu0: 100 + 40 + 0 + 1 + 1 busy ticks, 10 nice; at 100 ticks a second.
    CHECK(read_cpu_times(stat.string(), {0}, 100, &t));
    CHECK(near(t.busy, 1.42) && near(t.nice, 0.10));
    CHECK(read_cpu_times(stat.string(), {0, 1}, 100, &t));
    CHECK(near(t.busy, 1.42 + 2.62) && near(t.nice, 0.30));
    CHECK(read_cpu_times(stat.string(), {12}, 100, &t));  // "cpu12" is not "cpu1"
    CHECK(near(t.busy, 5.0));
    CHECK(read_cpu_times(stat.string(), {1, 7}, 100, &t));  // cpu7 offline: counts nothing
    CHECK(near(t.busy, 2.62));
    CHECK(!read_cpu_times(stat.string(), {7}, 100, &t));
    CHECK(!read_cpu_times((dir / "missing").string(), {0}, 100, &t));
    std::ofstream(dir / "garbage") << "cpu0 x y z\nnot a stat file\n";
    CHECK(!read_cpu_times((dir / "garbage").string(), {0}, 100, &t));
    std::ofstream(dir / "old") << "cpu0 100 10 40 2000 5 0 1\n";  // no steal column
    CHECK(read_cpu_times((dir / "old").string(), {0}, 100, &t) && near(t.busy, 1.41));
}

void check_other_programs() {
    const CpuTimes before{10.0, 1.0}, after{11.6, 1.9};                          // 1.6 s busy, 0.9 s nice, over 1 s
    CHECK(near(other_programs_cpus(before, after, 1.0, 1.0, false), 0.6));       // the niced 0.9 s yields to us
    CHECK(near(other_programs_cpus(before, after, 0.5, 1.0, true), 1.6 + 0.4));  // we are niced: ours is in nice
    CHECK(near(other_programs_cpus(before, after, 2.0, 1.0, false), 0.0));       // never below 0
    CHECK(near(other_programs_cpus(before, after, 1.0, 0.0, false), 0.0));
    CHECK(near(other_programs_cpus(before, after, 0.0, 2.0, false), 0.8));
}

void check_policy() {
    {
        // 2 cores, a busy program: what `yes` took beside 2 threads (0.65), then beside 1 (1.0).
        ThreadGovernor g(2, 2);
        CHECK(g.threads() == 2);
        CHECK(g.observe(0.4) == 2);   // 1.6 free of 2: stays
        CHECK(g.observe(0.65) == 1);  // a drop takes one window
        CHECK(g.observe(1.0) == 1);
        CHECK(g.observe(0.6) == 1);  // 1.4 free: not 1.75
        CHECK(g.observe(0.1) == 1);  // a rise takes two
        CHECK(g.observe(0.1) == 2);  // the program left
    }
    {
        // A window between that asks for no rise (or a drop) cancels the rise one window asked for.
        ThreadGovernor g(2, 2);
        CHECK(g.observe(0.9) == 1);
        CHECK(g.observe(0.0) == 1);
        CHECK(g.observe(1.0) == 1);
        CHECK(g.observe(0.0) == 1);
        CHECK(g.observe(0.9) == 1);
        CHECK(g.observe(0.0) == 1);
        CHECK(g.observe(0.0) == 2);
    }
    {
        // Two threads a core (4 logical CPUs, 2 threads): another program on one of them leaves both cores' threads
        // running.
        ThreadGovernor g(2, 4);
        CHECK(g.observe(1.0) == 2 && g.observe(1.0) == 2);
        CHECK(g.observe(2.7) == 1);  // 1.3 free
    }
    {
        // 8 CPUs: drops to what is free, rises as far as both windows asked, never below 1 or above the maximum.
        ThreadGovernor g(8, 8);
        CHECK(g.observe(3.0) == 5);                         // 5 free
        CHECK(g.observe(2.4) == 5);                         // 5.6 free of 5: neither 4.5 nor 5.75
        CHECK(g.observe(0.5) == 5 && g.observe(1.9) == 6);  // asked 7 (7.75), then 6 (6.35)
        CHECK(g.observe(20.0) == 1);
        CHECK(g.observe(0.0) == 1 && g.observe(0.0) == 8);
    }
    {
        ThreadGovernor g(1, 1);
        CHECK(g.observe(5.0) == 1 && g.observe(5.0) == 1);
    }
    // The real one, on this machine: within [1, max] whatever the load.
    LoadAwareThreads real(3);
    for (int i = 0; i < 3; ++i) {
        const int n = real.threads_for_next_pass();
        CHECK(n >= 1 && n <= 3);
        usleep(210 * 1000);
    }
}

// Decodes `rows_per_pass` rows at a time after a prompt, on 2 threads or switching between 1 and 2 pass by pass. (No
// more threads than a 2-core CI machine has: a pass with more threads than cores waits at each barrier for a
// descheduled one, and took minutes.)
std::vector<float> decode(const Model &model, bool switching, int rows_per_pass) {
    const HParams &hp = model.hparams();
    KvCache cache(model, 128);
    Forward fw(model, cache, 2);
    std::vector<int32_t> tokens(64);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 13) % hp.n_vocab);
    PassRequest fill;
    fill.layer_end = hp.n_layer;
    fill.n_rows = 16;
    fill.tokens = tokens.data();
    PassResult out;
    std::vector<float> logits;
    int pass = 0;
    for (int pos = fill.n_rows; pos + rows_per_pass <= static_cast<int>(tokens.size()); pos += rows_per_pass) {
        if (switching)
            fw.use_threads(1 + pass % 2);
        ++pass;
        if (pos == fill.n_rows)
            fw.run(fill, &out);
        PassRequest step;
        step.layer_end = hp.n_layer;
        step.pos0 = pos;
        step.n_rows = rows_per_pass;
        step.tokens = tokens.data() + pos;
        step.logits = PassRequest::Logits::all;
        fw.run(step, &out);
        CHECK(fw.threads_in_use() == (switching ? 1 + (pass - 1) % 2 : 2));
        logits.insert(logits.end(), out.logits.begin(), out.logits.end());
    }
    return logits;
}

void check_forward(const std::string &path) {
    Model model(path, false);
    for (int rows : {1, 4}) {
        const std::vector<float> fixed = decode(model, false, rows), switching = decode(model, true, rows);
        CHECK(!fixed.empty() && fixed.size() == switching.size());
        CHECK(std::memcmp(fixed.data(), switching.data(), sizeof(float) * fixed.size()) == 0);
        std::printf("%d-row passes, threads switching 1-2: logits %s\n", rows,
                    fixed == switching ? "bitwise equal" : "DIFFER");
    }
    KvCache cache(model, 32);
    Forward fw(model, cache, 2);
    bool threw = false;
    try {
        fw.use_threads(3);
    } catch (const Error &e) {
        threw = std::strstr(e.what(), "1 to 2 threads") != nullptr;
    }
    CHECK(threw);
    threw = false;
    try {
        fw.use_threads(0);
    } catch (const Error &) {
        threw = true;
    }
    CHECK(threw);
    fw.adapt_threads_to_load();
    CHECK(fw.threads_in_use() >= 1 && fw.threads_in_use() <= 2);
}

}  // namespace

int main() {
    const fs::path dir = fs::temp_directory_path() / ("adadecode-thread-governor-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    check_proc_stat(dir);
    fs::remove_all(dir);
    check_other_programs();
    check_policy();
    const std::string path = cached_smollm2_or_skip();
    if (!path.empty())
        check_forward(path);
    if (g_failures)
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return g_failures ? 1 : 0;
}
