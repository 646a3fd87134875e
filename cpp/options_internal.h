// Helpers of options.cpp that the engine and the bindings share.
#pragma once

#include <string>

namespace adadecode {

// This process's peak resident memory so far in MiB (ru_maxrss), or < 0 where the OS does not report it.
double process_peak_rss_mib();

// The shortest decimal text that reads back as `x`: 0.95f prints as 0.95, not 0.949999988.
std::string shortest_decimal(float x);
std::string shortest_decimal(double x);

}  // namespace adadecode
