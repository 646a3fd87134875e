// The default thread count's parts on made-up sysfs and cgroup trees: logical CPUs of one core count once, CPUs outside
// the given set do not count, a CPU without topology files counts as a core, a hybrid CPU's efficiency cores are left
// out, and a CPU quota (cgroup v2 or v1) is the least over the cgroup and those above it. Then the real one, on this
// machine: within [1, hardware_concurrency()].
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu_threads.h"

using namespace adadecode;
namespace fs = std::filesystem;

namespace {

void write(const fs::path &path, const std::string &text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text << "\n";
}

// cpuN of package `package`, core `core`.
void add_cpu(const fs::path &sysfs, int cpu, int package, int core) {
    const fs::path topology = sysfs / ("cpu" + std::to_string(cpu)) / "topology";
    write(topology / "physical_package_id", std::to_string(package));
    write(topology / "core_id", std::to_string(core));
}

}  // namespace

int main() {
    const fs::path root = fs::temp_directory_path() / ("adadecode-cpu-threads-" + std::to_string(::getpid()));
    fs::remove_all(root);

    // Two packages of two cores with two threads each: cpus 0-3 are package 0 (cores 0, 1 twice), 4-7 package 1
    // (its core ids repeat package 0's: only the pair names a core).
    const fs::path sysfs = root / "cpu";
    for (int cpu = 0; cpu < 8; ++cpu) add_cpu(sysfs, cpu, cpu / 4, cpu % 2);
    CHECK(count_physical_cores({0, 1, 2, 3, 4, 5, 6, 7}, sysfs.string()) == 4);
    CHECK(count_physical_cores({0, 2}, sysfs.string()) == 1);  // siblings
    CHECK(count_physical_cores({0, 1}, sysfs.string()) == 2);
    CHECK(count_physical_cores({0, 4}, sysfs.string()) == 2);  // same core id, other package
    CHECK(count_physical_cores({0, 9}, sysfs.string()) == 2);  // cpu9 has no topology files: a core of its own
    CHECK(count_physical_cores({}, sysfs.string()) == 0);

    // CPU lists, and a hybrid CPU's performance cores.
    CHECK(parse_cpu_list("0-3,8,10-11") == (std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
    CHECK(parse_cpu_list("5") == std::vector<int>{5});
    CHECK(parse_cpu_list("3-1").empty());
    CHECK(parse_cpu_list("0-").empty());
    CHECK(parse_cpu_list("a").empty());
    CHECK(parse_cpu_list("1-2x").empty());
    const fs::path devices = root / "devices";
    CHECK(performance_cpus({0, 1, 2, 3}, devices.string()) == (std::vector<int>{0, 1, 2, 3}));  // not hybrid
    write(devices / "cpu_core" / "cpus", "0-1");
    write(devices / "cpu_atom" / "cpus", "2-3");
    CHECK(performance_cpus({0, 1, 2, 3}, devices.string()) == (std::vector<int>{0, 1}));
    CHECK(performance_cpus({1, 3}, devices.string()) == std::vector<int>{1});
    CHECK(performance_cpus({2, 3}, devices.string()) == (std::vector<int>{2, 3}));  // only efficiency cores allowed

    // cgroup v2 quotas: none at the root, 3 CPUs above, 1.5 in the process's own; "max" is no limit.
    const fs::path cgroups = root / "cgroup";
    const fs::path parent = cgroups / "machine.slice", own = parent / "job.scope";
    fs::create_directories(own);
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 0);
    write(parent / "cpu.max", "300000 100000");
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 3.0);
    write(own / "cpu.max", "150000 100000");
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 1.5);
    write(own / "cpu.max", "max 100000");
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 3.0);
    write(parent / "cpu.max", "max 100000");
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 0);
    write(own / "cpu.max", "garbage");
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 0);
    write(own / "cpu.max", "12abc 100000");
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 0);
    write(cgroups / "cpu.max", "200000 100000");  // the root's own (a container's namespace root)
    CHECK(cgroup_cpu_quota(cgroups.string(), own.string()) == 2.0);
    CHECK(cgroup_cpu_quota(cgroups.string(), cgroups.string()) == 2.0);
    CHECK(cgroup_cpu_quota(cgroups.string(), (own / "not-in-this-mount").string()) == 2.0);

    // cgroup v1's cpu controller: a quota of -1 is none.
    const fs::path v1 = root / "cgroup-v1" / "cpu", v1_own = v1 / "docker" / "abc";
    write(v1_own / "cpu.cfs_quota_us", "-1");
    write(v1_own / "cpu.cfs_period_us", "100000");
    CHECK(cgroup_cpu_quota(v1.string(), v1_own.string()) == 0);
    write(v1_own / "cpu.cfs_quota_us", "250000");
    CHECK(cgroup_cpu_quota(v1.string(), v1_own.string()) == 2.5);

    const int threads = default_thread_count();
    const int online = static_cast<int>(std::thread::hardware_concurrency());
    CHECK(threads >= 1);
    CHECK(online == 0 || threads <= online);

    fs::remove_all(root);
    return g_failures == 0 ? 0 : 1;
}
