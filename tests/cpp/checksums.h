// Checksums of a kernel's outputs, kept in a file computed on x86, so that a kernel on another architecture (run
// under qemu) can be shown to give bitwise the same results: test_qmatmul and test_attention.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "check.h"

using Checksums = std::map<std::string, uint64_t>;  // case name -> FNV-1a of its output floats

inline uint64_t fnv1a(const std::vector<float> &values) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (float v : values) {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        for (int i = 0; i < 4; ++i) {
            h ^= (bits >> (8 * i)) & 0xFF;
            h *= 0x100000001B3ULL;
        }
    }
    return h;
}

inline std::string hex(uint64_t v) {
    char text[17];
    std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(v));
    return text;
}

// `header` (comment lines starting with '#'), then one "case-name checksum" line per case; true when written.
inline bool write_checksums(const char *path, const char *header, const Checksums &sums) {
    std::ofstream out(path);
    out << header;
    for (const auto &[key, sum] : sums) out << key << " " << hex(sum) << "\n";
    return static_cast<bool>(out);
}

// Every case of `sums` must have its checksum in the file at `path` (written by write_checksums) and equal it; a
// missing or different one fails a CHECK. `kernel` names the kernel in the messages ("family avx2"); the last line,
// "KERNEL: N output checksums compared with x86's", is what scripts/test_arm.sh looks for.
inline void check_checksums(const char *path, const Checksums &sums, const std::string &kernel) {
    std::ifstream in(path);
    if (!in) {
        std::fprintf(stderr, "cannot read %s\n", path);
        CHECK(false);
        return;
    }
    std::map<std::string, std::string> expected;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#')
            continue;
        const size_t space = line.rfind(' ');
        expected[line.substr(0, space)] = line.substr(space + 1);
    }
    int compared = 0;
    for (const auto &[key, sum] : sums) {
        const auto it = expected.find(key);
        if (it == expected.end()) {
            std::fprintf(stderr, "%s: no x86 checksum in %s\n", key.c_str(), path);
            CHECK(false);
            continue;
        }
        ++compared;
        if (it->second != hex(sum)) {
            std::fprintf(stderr, "%s (%s): checksum %s, x86 %s\n", key.c_str(), kernel.c_str(), hex(sum).c_str(),
                         it->second.c_str());
            CHECK(false);
        }
    }
    std::printf("%s: %d output checksums compared with x86's\n", kernel.c_str(), compared);
}
