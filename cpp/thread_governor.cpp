#include "thread_governor.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cpu_threads.h"

#ifdef __linux__
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace adadecode {

namespace {

constexpr double window_seconds = 0.2;

#ifdef __linux__
double own_cpu_seconds() {
    rusage usage{};
    if (getrusage(RUSAGE_SELF, &usage) != 0)
        return 0;
    auto seconds = [](const timeval &t) {
        return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec);
    };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}
#endif

}  // namespace

bool read_cpu_times(const std::string &proc_stat, const std::vector<int> &cpus, double ticks_per_second,
                    CpuTimes *times) {
    std::ifstream in(proc_stat);
    if (!in || ticks_per_second <= 0)
        return false;
    CpuTimes sum;
    int found = 0;
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, 3, "cpu") != 0 || line.size() < 4 || line[3] < '0' || line[3] > '9')
            continue;  // the all-CPU line "cpu " and the lines after the CPUs
        std::istringstream fields(line.substr(3));
        int cpu = -1;
        double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
        if (!(fields >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq))
            continue;
        if (!(fields >> steal))
            steal = 0;  // kernels before 2.6.11
        if (std::find(cpus.begin(), cpus.end(), cpu) == cpus.end())
            continue;
        sum.busy += user + system + irq + softirq + steal;
        sum.nice += nice;
        ++found;
    }
    if (found == 0)
        return false;
    times->busy = sum.busy / ticks_per_second;
    times->nice = sum.nice / ticks_per_second;
    return true;
}

double other_programs_cpus(const CpuTimes &before, const CpuTimes &after, double own_cpu_seconds, double wall_seconds,
                           bool own_niced) {
    if (wall_seconds <= 0)
        return 0;
    const double busy = after.busy - before.busy, nice = after.nice - before.nice;
    // A niced program yields its CPU to a pass at normal priority, so it takes nothing from the pass's threads.
    const double others = own_niced ? busy + std::max(0.0, nice - own_cpu_seconds) : busy - own_cpu_seconds;
    return std::max(0.0, others / wall_seconds);
}

ThreadGovernor::ThreadGovernor(int max_threads, int n_cpus)
    : max_threads_(std::max(1, max_threads)), n_cpus_(std::max(1, n_cpus)), threads_(max_threads_) {}

int ThreadGovernor::wanted(double others_cpus) const {
    const double free = n_cpus_ - others_cpus;
    if (free < threads_ - 0.5)
        return std::clamp(static_cast<int>(std::floor(free + 0.5)), 1, max_threads_);
    if (free >= threads_ + 0.75)
        return std::clamp(static_cast<int>(std::floor(free + 0.25)), 1, max_threads_);
    return threads_;
}

int ThreadGovernor::observe(double others_cpus) {
    const int want = wanted(others_cpus);
    if (want < threads_) {
        threads_ = want;
        pending_rise_ = 0;
    } else if (want == threads_) {
        pending_rise_ = 0;
    } else if (pending_rise_ != 0) {
        threads_ = std::min(want, pending_rise_);  // as far as both windows asked
        pending_rise_ = 0;
    } else {
        pending_rise_ = want;
    }
    return threads_;
}

bool adapt_threads_by_default() {
    static const bool adapt = [] {
        const char *env = std::getenv("ADADECODE_ADAPT_THREADS");
        if (!env || !*env || std::strcmp(env, "1") == 0)
            return true;
        if (std::strcmp(env, "0") == 0)
            return false;
        std::fprintf(stderr, "adadecode: ADADECODE_ADAPT_THREADS='%s' is not 0 or 1; adapting the thread count\n", env);
        return true;
    }();
    return adapt;
}

LoadAwareThreads::LoadAwareThreads(int max_threads)
    : max_threads_(std::max(1, max_threads)), governor_(max_threads_, max_threads_) {
#ifdef __linux__
    cpus_ = allowed_cpus();
    const long ticks = sysconf(_SC_CLK_TCK);
    ticks_per_second_ = ticks > 0 ? static_cast<double>(ticks) : 100.0;
    errno = 0;
    const int priority = getpriority(PRIO_PROCESS, 0);
    own_niced_ = errno == 0 && priority > 0;
    readable_ = !cpus_.empty() && read_cpu_times("/proc/stat", cpus_, ticks_per_second_, &last_times_);
    if (readable_) {
        governor_ = ThreadGovernor(max_threads_, static_cast<int>(cpus_.size()));
        last_own_seconds_ = own_cpu_seconds();
        last_reading_ = std::chrono::steady_clock::now();
    }
#endif
}

int LoadAwareThreads::threads_for_next_pass() {
#ifdef __linux__
    if (!readable_)
        return governor_.threads();
    const auto now = std::chrono::steady_clock::now();
    const double wall = std::chrono::duration<double>(now - last_reading_).count();
    if (wall < window_seconds)
        return governor_.threads();
    CpuTimes times;
    if (!read_cpu_times("/proc/stat", cpus_, ticks_per_second_, &times))
        return governor_.threads();
    const double own = own_cpu_seconds();
    governor_.observe(other_programs_cpus(last_times_, times, own - last_own_seconds_, wall, own_niced_));
    last_times_ = times;
    last_own_seconds_ = own;
    last_reading_ = now;
#endif
    return governor_.threads();
}

}  // namespace adadecode
