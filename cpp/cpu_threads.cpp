#include "cpu_threads.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#ifdef __linux__
#include <sched.h>
#endif

namespace adadecode {

namespace {

bool read_first_line(const std::string &path, std::string &line) {
    std::ifstream in(path);
    return in && std::getline(in, line);
}

bool read_long(const std::string &path, long &value) {
    std::ifstream in(path);
    return in && (in >> value);
}

// The quota in a cgroup directory, in CPUs (0: none): v2's cpu.max ("max 100000" is none, "150000 100000" 1.5 CPUs),
// or v1's cpu.cfs_quota_us over cpu.cfs_period_us (a quota of -1 is none).
double quota_in(const std::string &dir) {
    std::string line;
    if (read_first_line(dir + "/cpu.max", line)) {
        std::istringstream fields(line);
        std::string quota;
        double period = 0;
        if (fields >> quota >> period && period > 0) {
            char *end = nullptr;
            const double cpus = std::strtod(quota.c_str(), &end) / period;  // "max" parses as nothing
            if (end != quota.c_str() && *end == '\0' && cpus > 0)
                return cpus;
        }
        return 0;
    }
    long quota = 0, period = 0;
    if (read_long(dir + "/cpu.cfs_quota_us", quota) && read_long(dir + "/cpu.cfs_period_us", period) && quota > 0 &&
        period > 0) {
        return static_cast<double>(quota) / static_cast<double>(period);
    }
    return 0;
}

#ifdef __linux__
// This process's cgroups that can hold a CPU quota, as (mount, cgroup directory): the cgroup v2 one ("0::/path" in
// /proc/self/cgroup) and the v1 "cpu" controller's ("N:cpu,cpuacct:/path"). In a container the path may name a
// directory that its mount does not show; cgroup_cpu_quota then reads the mount's root, the container's own cgroup.
std::vector<std::pair<std::string, std::string>> own_cgroups() {
    std::vector<std::pair<std::string, std::string>> found;
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line)) {
        const size_t first = line.find(':'), second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos)
            continue;
        const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
        const std::string path = line.substr(second + 1);
        if (controllers == ",,") {
            found.emplace_back("/sys/fs/cgroup", "/sys/fs/cgroup" + path);
        } else if (controllers.find(",cpu,") != std::string::npos) {
            found.emplace_back("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu" + path);
        }
    }
    return found;
}
#endif

}  // namespace

std::vector<int> allowed_cpus() {
#ifdef __linux__
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &set))
            cpus.push_back(cpu);
    }
    return cpus;
#else
    return {};
#endif
}

std::vector<int> parse_cpu_list(const std::string &text) {
    std::vector<int> cpus;
    std::istringstream ranges(text);
    std::string range;
    while (std::getline(ranges, range, ',')) {
        int first = 0, last = 0;
        char dash = 0, rest = 0;
        std::istringstream parts(range);
        if (!(parts >> first) || first < 0)
            return {};
        last = first;
        if (parts >> dash && (dash != '-' || !(parts >> last) || last < first || parts >> rest))
            return {};
        for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
    }
    return cpus;
}

std::vector<int> performance_cpus(const std::vector<int> &cpus, const std::string &sysfs_devices) {
    std::string line;
    if (!read_first_line(sysfs_devices + "/cpu_core/cpus", line))
        return cpus;
    const std::vector<int> listed = parse_cpu_list(line);
    const std::set<int> performance(listed.begin(), listed.end());
    std::vector<int> kept;
    for (int cpu : cpus) {
        if (performance.count(cpu))
            kept.push_back(cpu);
    }
    return kept.empty() ? cpus : kept;
}

int count_physical_cores(const std::vector<int> &cpus, const std::string &sysfs_cpu) {
    std::set<std::pair<long, long>> cores;
    int without_topology = 0;
    for (int cpu : cpus) {
        const std::string topology = sysfs_cpu + "/cpu" + std::to_string(cpu) + "/topology/";
        long package = 0, core = 0;
        if (read_long(topology + "physical_package_id", package) && read_long(topology + "core_id", core)) {
            cores.emplace(package, core);
        } else {
            ++without_topology;
        }
    }
    return static_cast<int>(cores.size()) + without_topology;
}

double cgroup_cpu_quota(const std::string &cgroup_root, const std::string &cgroup_dir) {
    double least = 0;
    std::string dir = cgroup_dir;
    while (dir.size() >= cgroup_root.size()) {
        const double cpus = quota_in(dir);
        if (cpus > 0 && (least == 0 || cpus < least))
            least = cpus;
        if (dir.size() == cgroup_root.size())
            break;
        const size_t slash = dir.find_last_of('/');
        if (slash == std::string::npos || slash < cgroup_root.size()) {
            dir = cgroup_root;
        } else {
            dir.resize(slash);
        }
    }
    return least;
}

int default_thread_count() {
    const int online = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
#ifdef __linux__
    const std::vector<int> cpus = allowed_cpus();
    int threads =
        cpus.empty() ? online : count_physical_cores(performance_cpus(cpus, "/sys/devices"), "/sys/devices/system/cpu");
    for (const auto &[mount, dir] : own_cgroups()) {
        const double quota = cgroup_cpu_quota(mount, dir);
        if (quota > 0)
            threads = std::min(threads, static_cast<int>(std::ceil(quota)));
    }
    return std::max(1, threads);
#else
    return online;
#endif
}

}  // namespace adadecode
