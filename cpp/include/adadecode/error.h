// Errors the engine reports to its callers. Every user-facing failure (bad file, bad input, bad flag) is an
// adadecode::Error with a message that names the problem; the Python bindings turn it into adadecode.Error.
#pragma once

#include <stdexcept>
#include <string>

namespace adadecode {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string &message) : std::runtime_error(message) {}
};

}  // namespace adadecode
