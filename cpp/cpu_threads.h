// How many threads a pass runs with when the user gives none.
//
// Why not std::thread::hardware_concurrency(): it counts every online logical CPU of the machine. A process confined
// to a few of them (taskset, a container's cpuset) then runs more threads than it has CPUs, and a pass waits at every
// barrier for a thread the kernel has descheduled. Two logical CPUs of one core (SMT) share its load ports and caches,
// and a decoding pass streams weights at the rate of the cores, not of their threads. A container given a CPU quota
// (docker --cpus) is throttled when its threads use more than the quota. Each of these makes the pass slower than one
// thread per core it may use. On Intel's hybrid CPUs the efficiency cores are left out, as llama.cpp does: the ops
// that split their rows evenly over the threads wait at every barrier for the slower cores' share.
#pragma once

#include <string>
#include <vector>

namespace adadecode {

// One per physical core among the CPUs this process may run on (its affinity mask; of those, the performance cores on a
// hybrid CPU), and no more than the CPU quota of its cgroup allows (rounded up); at least 1. Linux; elsewhere
// hardware_concurrency().
int default_thread_count();

// The CPUs in this process's affinity mask (Linux; empty elsewhere or when it cannot be read).
std::vector<int> allowed_cpus();

// The parts, with the paths given, so that tests can run them on a directory tree of their own.

// A CPU list as sysfs writes it ("0-3,8,10-11"); empty when malformed.
std::vector<int> parse_cpu_list(const std::string &text);

// Of `cpus`, those that <sysfs_devices>/cpu_core/cpus lists: the performance cores of a hybrid Intel CPU (its
// efficiency cores are in cpu_atom). `cpus` unchanged where that file is missing or lists none of them.
std::vector<int> performance_cpus(const std::vector<int> &cpus, const std::string &sysfs_devices);

// Physical cores among `cpus`: CPUs whose <sysfs_cpu>/cpuN/topology/{physical_package_id,core_id} are equal are one
// core. A CPU without those files counts as a core of its own.
int count_physical_cores(const std::vector<int> &cpus, const std::string &sysfs_cpu);

// The CPU quota, in CPUs, of the cgroup at `cgroup_dir` and of every cgroup above it up to `cgroup_root`, the least of
// them (cgroup v2's cpu.max: "max 100000" is no limit, "150000 100000" is 1.5 CPUs; v1's cpu.cfs_quota_us over
// cpu.cfs_period_us, -1 no limit). 0: no quota.
double cgroup_cpu_quota(const std::string &cgroup_root, const std::string &cgroup_dir);

}  // namespace adadecode
