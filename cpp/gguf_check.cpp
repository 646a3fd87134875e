#include "gguf_check.h"

#include <cstdio>
#include <string>
#include <unordered_set>
#include <vector>

#include "error.h"
#include "ggml.h"

namespace adadecode {

namespace {

// GGUF value types (the numbering is part of the file format).
enum : uint32_t {
    t_uint8 = 0, t_int8, t_uint16, t_int16, t_uint32, t_int32, t_float32, t_bool, t_string, t_array, t_uint64,
    t_int64, t_float64,
};

constexpr uint64_t max_key_length = 1 << 16;
// The smallest possible encodings, used to bound counts by the bytes that are left: a key/value pair is a
// length-prefixed non-empty key, a type and at least one value byte; a tensor entry is a length-prefixed
// non-empty name, n_dims, a type and an offset.
constexpr uint64_t min_kv_bytes = 8 + 1 + 4 + 1;
constexpr uint64_t min_tensor_bytes = 8 + 1 + 4 + 4 + 8;

uint64_t scalar_size(uint32_t type) {
    switch (type) {
        case t_uint8: case t_int8: case t_bool: return 1;
        case t_uint16: case t_int16: return 2;
        case t_uint32: case t_int32: case t_float32: return 4;
        case t_uint64: case t_int64: case t_float64: return 8;
        default: return 0;
    }
}

const char *type_name(uint32_t type) {
    static const char *const names[] = {"uint8", "int8",   "uint16", "int16", "uint32", "int32",  "float32",
                                        "bool",  "string", "array",  "uint64", "int64", "float64"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "invalid";
}

// Sequential reads that never go past the end of the file; every failure names what was being read and where.
class Reader {
public:
    Reader(const std::string &path, uint64_t size) : path_(path), size_(size) {
        file_ = std::fopen(path.c_str(), "rb");
        if (!file_) throw Error("cannot open '" + path + "' for reading");
    }
    ~Reader() { std::fclose(file_); }
    Reader(const Reader &) = delete;
    Reader &operator=(const Reader &) = delete;

    uint64_t pos() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }

    [[noreturn]] void fail(const std::string &problem) const { throw Error("'" + path_ + "': " + problem); }

    void need(uint64_t n, const std::string &what) const {
        if (n > remaining()) {
            fail("truncated or corrupt: " + what + " at byte " + std::to_string(pos_) + " needs " + std::to_string(n) +
                 " bytes but only " + std::to_string(remaining()) + " are left");
        }
    }

    void read(void *dst, uint64_t n, const std::string &what) {
        need(n, what);
        if (std::fread(dst, 1, n, file_) != n) fail("read error at byte " + std::to_string(pos_));
        pos_ += n;
    }

    void skip(uint64_t n, const std::string &what) {
        need(n, what);
        if (n > 0 && std::fseek(file_, static_cast<long>(n), SEEK_CUR) != 0) {
            fail("seek error at byte " + std::to_string(pos_));
        }
        pos_ += n;
    }

    template <typename T>
    T get(const std::string &what) {
        T value{};
        read(&value, sizeof(T), what);
        return value;
    }

    // A length-prefixed string of at most `max_length` bytes.
    std::string string(uint64_t max_length, const std::string &what) {
        const uint64_t n = get<uint64_t>("the length of " + what);
        if (n > max_length) {
            fail(what + " has length " + std::to_string(n) + " (at most " + std::to_string(max_length) + " allowed)");
        }
        std::string s(static_cast<size_t>(n), '\0');
        read(s.data(), n, what);
        return s;
    }

    void skip_string(const std::string &what) { skip(get<uint64_t>("the length of " + what), what); }

private:
    std::string path_;
    uint64_t size_;
    uint64_t pos_ = 0;
    FILE *file_ = nullptr;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_add_overflow(a, b, out); }

struct TensorEntry {
    std::string name;
    uint64_t offset;
    uint64_t nbytes;
};

void check_value(Reader &r, const std::string &key, uint32_t type, uint64_t *alignment) {
    const std::string what = "the value of '" + key + "'";
    if (key == "general.alignment") {
        if (type != t_uint32) r.fail("general.alignment must be a uint32, not " + std::string(type_name(type)));
        const uint32_t a = r.get<uint32_t>(what);
        if (a == 0 || (a & (a - 1)) != 0) r.fail("general.alignment = " + std::to_string(a) + " is not a power of 2");
        *alignment = a;
        return;
    }
    if (type == t_string) {
        r.skip_string(what);
        return;
    }
    if (type == t_array) {
        const uint32_t elem = r.get<uint32_t>("the element type of '" + key + "'");
        const uint64_t n = r.get<uint64_t>("the length of '" + key + "'");
        if (elem == t_string) {
            // Each element needs at least its 8-byte length.
            if (n > r.remaining() / 8) {
                r.fail("metadata array '" + key + "' claims " + std::to_string(n) + " strings, more than the " +
                       std::to_string(r.remaining()) + " bytes left could hold");
            }
            for (uint64_t i = 0; i < n; ++i) r.skip_string("element " + std::to_string(i) + " of '" + key + "'");
            return;
        }
        const uint64_t size = scalar_size(elem);
        if (size == 0) {
            r.fail("metadata array '" + key + "' has invalid element type " + std::to_string(elem) +
                   (elem == t_array ? " (nested arrays are not supported)" : ""));
        }
        if (n > r.remaining() / size) {
            r.fail("metadata array '" + key + "' claims " + std::to_string(n) + " " + type_name(elem) +
                   " values, more than the " + std::to_string(r.remaining()) + " bytes left could hold");
        }
        r.skip(n * size, what);
        return;
    }
    const uint64_t size = scalar_size(type);
    if (size == 0) r.fail("metadata key '" + key + "' has invalid type " + std::to_string(type));
    r.skip(size, what);
}

}  // namespace

void check_gguf_structure(const std::string &path, uint64_t file_size) {
    Reader r(path, file_size);
    if (file_size < 4) r.fail("not a GGUF file (" + std::to_string(file_size) + " bytes: empty or truncated)");
    char magic[4];
    r.read(magic, 4, "the magic");
    if (magic[0] != 'G' || magic[1] != 'G' || magic[2] != 'U' || magic[3] != 'F') {
        throw Error("'" + path + "' is not a GGUF file (bad magic)");
    }
    const uint32_t version = r.get<uint32_t>("the GGUF version");
    if (version != 2 && version != 3) {
        if (version != 0 && (version & 0xFFFF) == 0) {
            r.fail("GGUF version " + std::to_string(version) + " looks byte-swapped (a big-endian file?)");
        }
        r.fail("unsupported GGUF version " + std::to_string(version) + " (supported: 2 and 3)");
    }
    const int64_t n_tensors = r.get<int64_t>("the tensor count");
    const int64_t n_kv = r.get<int64_t>("the metadata count");
    if (n_tensors < 0 || static_cast<uint64_t>(n_tensors) > r.remaining() / min_tensor_bytes) {
        r.fail("truncated or corrupt: tensor count " + std::to_string(n_tensors) + " is impossible for a file of " +
               std::to_string(file_size) + " bytes");
    }
    if (n_kv < 0 || static_cast<uint64_t>(n_kv) > r.remaining() / min_kv_bytes) {
        r.fail("truncated or corrupt: metadata count " + std::to_string(n_kv) + " is impossible for a file of " +
               std::to_string(file_size) + " bytes");
    }

    uint64_t alignment = 32;  // GGUF's default when general.alignment is absent
    std::unordered_set<std::string> keys;
    for (int64_t i = 0; i < n_kv; ++i) {
        const std::string key = r.string(max_key_length, "metadata key #" + std::to_string(i));
        if (key.empty()) r.fail("metadata key #" + std::to_string(i) + " is empty");
        // ggml looks keys up as C strings: a NUL inside one would make it shadow or hide another key.
        if (key.find('\0') != std::string::npos) r.fail("metadata key #" + std::to_string(i) + " contains a NUL byte");
        if (!keys.insert(key).second) r.fail("duplicate metadata key '" + key + "'");
        const uint32_t type = r.get<uint32_t>("the type of '" + key + "'");
        check_value(r, key, type, &alignment);
    }

    std::vector<TensorEntry> tensors;
    tensors.reserve(static_cast<size_t>(n_tensors));
    std::unordered_set<std::string> names;
    for (int64_t i = 0; i < n_tensors; ++i) {
        const std::string what = "tensor #" + std::to_string(i);
        const std::string name = r.string(GGML_MAX_NAME - 1, "the name of " + what);
        if (name.empty()) r.fail(what + " has an empty name");
        if (name.find('\0') != std::string::npos) r.fail(what + " has a name containing a NUL byte");
        if (!names.insert(name).second) r.fail("duplicate tensor '" + name + "'");
        const std::string t = "tensor '" + name + "'";
        const uint32_t n_dims = r.get<uint32_t>("the dimension count of " + t);
        if (n_dims > GGML_MAX_DIMS) {
            r.fail(t + " has " + std::to_string(n_dims) + " dimensions (at most " + std::to_string(GGML_MAX_DIMS) + ")");
        }
        int64_t ne[GGML_MAX_DIMS] = {1, 1, 1, 1};
        uint64_t n_elements = 1;
        bool overflow = false;
        for (uint32_t d = 0; d < n_dims; ++d) {
            ne[d] = r.get<int64_t>("the shape of " + t);
            if (ne[d] < 0) r.fail(t + " has negative dimension " + std::to_string(ne[d]));
        }
        for (int64_t d : ne) overflow = overflow || mul_overflows(n_elements, static_cast<uint64_t>(d), &n_elements);
        if (overflow || n_elements > static_cast<uint64_t>(INT64_MAX)) {
            r.fail(t + " has an impossibly large shape [" + std::to_string(ne[0]) + ", " + std::to_string(ne[1]) + ", " +
                   std::to_string(ne[2]) + ", " + std::to_string(ne[3]) + "]");
        }
        const uint32_t type = r.get<uint32_t>("the type of " + t);
        if (type >= GGML_TYPE_COUNT) r.fail(t + " has invalid ggml type " + std::to_string(type));
        const int64_t block = ggml_blck_size(static_cast<ggml_type>(type));
        const size_t type_size = ggml_type_size(static_cast<ggml_type>(type));
        if (block <= 0 || type_size == 0) r.fail(t + " has removed ggml type " + std::to_string(type));
        if (ne[0] % block != 0) {
            r.fail(t + " of type " + ggml_type_name(static_cast<ggml_type>(type)) + " has rows of " +
                   std::to_string(ne[0]) + " elements, not a multiple of its block size " + std::to_string(block));
        }
        uint64_t nbytes = 0;
        if (mul_overflows(n_elements / static_cast<uint64_t>(block), type_size, &nbytes)) {
            r.fail(t + " is impossibly large");
        }
        const uint64_t offset = r.get<uint64_t>("the data offset of " + t);
        tensors.push_back({name, offset, nbytes});
    }

    // Tensor data starts at the next multiple of the alignment and is packed in directory order, each tensor
    // padded to the alignment (that is what ggml's reader accepts).
    uint64_t data_start = r.pos();
    if (n_tensors > 0) data_start = (data_start + alignment - 1) / alignment * alignment;
    uint64_t expected = 0;
    for (const TensorEntry &t : tensors) {
        if (t.offset != expected) {
            r.fail("tensor '" + t.name + "' has data offset " + std::to_string(t.offset) + ", expected " +
                   std::to_string(expected) + " (tensor data is stored in order, each aligned to " +
                   std::to_string(alignment) + " bytes)");
        }
        uint64_t begin = 0, end = 0, padded = 0;
        if (add_overflows(data_start, t.offset, &begin) || add_overflows(begin, t.nbytes, &end) || end > file_size) {
            r.fail("truncated or corrupt: the data of tensor '" + t.name + "' (" + std::to_string(t.nbytes) +
                   " bytes at offset " + std::to_string(t.offset) + ") lies outside the file of " +
                   std::to_string(file_size) + " bytes");
        }
        if (add_overflows(t.nbytes, alignment - 1, &padded)) r.fail("tensor '" + t.name + "' is impossibly large");
        expected = t.offset + padded / alignment * alignment;
    }
}

}  // namespace adadecode
