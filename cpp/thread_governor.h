// How many threads the next pass runs with when the user left the count to us: one per core the process may use
// (default_thread_count), less the CPUs that other programs keep busy.
//
// Why: a pass synchronises its threads at ~17 barriers a layer. A thread that shares its CPU with another busy
// program is descheduled for milliseconds at a time, and every barrier waits for it, so two threads on one free core
// and one busy one are slower than one thread on the free core. Measured on 2 cores (Qwen2.5-Coder-1.5B, standard
// decoding, `yes` keeping one core busy): 2 threads 8.7-10.0 tokens/s, 1 thread 12.9-13.0; on the quiet machine
// 2 threads 25.5, 1 thread 13.9. A program at lower priority (nice) does not count: the scheduler gives its CPU
// to the pass (with `nice -n 19 yes` 2 threads ran at 25.3 tokens/s).
//
// Other programs' load is read from /proc/stat: the busy time of the CPUs in this process's affinity mask less the
// process's own CPU time, over windows of at least 0.2 s. With F of those CPUs free of other programs' work, a count
// of T drops (to F rounded) when F < T - 0.5, and rises (to F + 0.25 rounded down, at most the maximum) when
// F >= T + 0.75. (With `yes` on one of 2 cores, `yes` got 0.65 of a CPU beside 2 threads and all of one beside 1.)
// A drop takes one window, a rise two in a row: too many threads cost far more than too few (two processes of 2
// threads on 2 cores decoded 0.5 tokens/s each, of 1 thread 14), and a rise after a passing burst of load would only
// drop again. Outputs are bitwise the same at every thread count, so this changes only the speed. Linux; elsewhere
// the count stays at its maximum.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace adadecode {

// Busy seconds of a set of CPUs since boot, from /proc/stat: at normal priority (user, system, irq, softirq, steal)
// and at lower priority (nice).
struct CpuTimes {
    double busy = 0;
    double nice = 0;
};

// Sums the `cpuN` lines of `cpus` in the file at `proc_stat` (in /proc/stat's format, clock ticks of
// `ticks_per_second`; a CPU without a line, offline, counts nothing). False when the file cannot be read or has a line
// for none of them.
bool read_cpu_times(const std::string &proc_stat, const std::vector<int> &cpus, double ticks_per_second,
                    CpuTimes *times);

// CPUs' worth of other programs' work between two readings `wall_seconds` apart, during which this process used
// `own_cpu_seconds`: the busy time less this process's own, over the wall time. `own_niced`: this process runs at
// lower priority, so its time is in `nice` and other programs' nice time competes with it too.
double other_programs_cpus(const CpuTimes &before, const CpuTimes &after, double own_cpu_seconds, double wall_seconds,
                           bool own_niced);

// The policy alone, fed one reading per window.
class ThreadGovernor {
public:
    // max_threads: the count with nothing else running; n_cpus: the logical CPUs the process may run on.
    ThreadGovernor(int max_threads, int n_cpus);
    int threads() const { return threads_; }
    // Other programs' CPUs' worth over the last window; returns the count for the passes from now on.
    int observe(double others_cpus);

private:
    int wanted(double others_cpus) const;
    int max_threads_;
    int n_cpus_;
    int threads_;
    int pending_rise_ = 0;  // what the last window asked for when it asked for more threads; 0: nothing pending
};

// Whether a model given no thread count adapts it to other programs' load: yes, unless ADADECODE_ADAPT_THREADS=0 in
// the environment (read once; another value than 0 or 1 is named on stderr and ignored). Then it stays at one thread
// per core, as before: for a /proc/stat that does not describe the process's CPUs (some containers), and to measure
// one against the other.
bool adapt_threads_by_default();

// A ThreadGovernor fed from this machine's /proc/stat and this process's CPU time.
class LoadAwareThreads {
public:
    explicit LoadAwareThreads(int max_threads);
    int max_threads() const { return max_threads_; }
    // The count for the pass about to run: reads the load when a window has passed since the last reading.
    int threads_for_next_pass();

private:
    int max_threads_;
    std::vector<int> cpus_;
    double ticks_per_second_ = 100;
    bool own_niced_ = false;
    bool readable_ = false;
    ThreadGovernor governor_;
    CpuTimes last_times_;
    double last_own_seconds_ = 0;
    std::chrono::steady_clock::time_point last_reading_;
};

}  // namespace adadecode
