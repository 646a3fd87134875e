// Where the C++ tests find SmolLM2: the adadecode cache ($ADADECODE_CACHE, else ~/.cache/adadecode), as
// `adadecode fetch smollm2-135m` leaves it. Tests that need it skip without it.
#pragma once

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>

// The path of the cached SmolLM2-135M, or "" (after printing why the caller skips) when it is not there.
inline std::string cached_smollm2_or_skip() {
    const char *cache = std::getenv("ADADECODE_CACHE");
    const char *home = std::getenv("HOME");
    const std::string path =
        std::string(cache && *cache ? cache : std::string(home ? home : ".") + "/.cache/adadecode") +
        "/models/smollm2-135m.gguf";
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        std::printf("skipped: %s not found (run `adadecode fetch smollm2-135m`)\n", path.c_str());
        return "";
    }
    return path;
}
