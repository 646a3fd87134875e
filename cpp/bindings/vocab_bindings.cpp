// pybind11 bindings of the tokenizer: _core.Vocab (loads only the vocabulary of a GGUF) and _core.StreamDecoder.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "unicode.h"
#include "vocab.h"

namespace py = pybind11;
using namespace adadecode;

namespace {

// str -> its UTF-8; bytes -> as is (validated by the tokenizer, which names the offset of a bad byte).
std::string text_bytes(const py::object &text) {
    if (py::isinstance<py::bytes>(text)) {
        return text.cast<std::string>();
    }
    if (py::isinstance<py::str>(text)) {
        Py_ssize_t size = 0;
        const char *data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
        if (!data) {
            throw py::error_already_set();  // e.g. a lone surrogate: Python's own UnicodeEncodeError says where
        }
        return std::string(data, static_cast<size_t>(size));
    }
    throw py::type_error("text must be str or bytes");
}

std::vector<int32_t> to_ids(const std::vector<int64_t> &ids) {
    std::vector<int32_t> out;
    out.reserve(ids.size());
    for (int64_t id : ids) {
        if (id < INT32_MIN || id > INT32_MAX) {
            throw Error("token id " + std::to_string(id) + " is out of range");
        }
        out.push_back(static_cast<int32_t>(id));
    }
    return out;
}

const char *pre_kind_name(pretok::Kind k) {
    switch (k) {
        case pretok::Kind::gpt2:
            return "gpt2";
        case pretok::Kind::llama3:
            return "llama3";
        case pretok::Kind::qwen2:
            return "qwen2";
        case pretok::Kind::digits_gpt2:
            return "digits_gpt2";
    }
    return "?";
}

}  // namespace

void bind_vocab(py::module_ &m) {
    py::class_<Vocab>(m, "Vocab", "The tokenizer of a GGUF model, read from its metadata only.")
        .def(py::init([](const std::string &path) {
                 py::gil_scoped_release release;
                 GgufFile file(path);
                 return Vocab::from_gguf(file);
             }),
             py::arg("path"))
        .def(
            "tokenize",
            [](const Vocab &v, const py::object &text, bool add_special, bool parse_special) {
                const std::string bytes = text_bytes(text);
                // Short texts are not worth the GIL round trip.
                if (bytes.size() < 4096) {
                    return v.tokenize(bytes, add_special, parse_special);
                }
                py::gil_scoped_release release;
                return v.tokenize(bytes, add_special, parse_special);
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = true,
            "Token ids of text (str or UTF-8 bytes); add_special adds BOS/EOS per the GGUF flags, parse_special "
            "turns control-token texts such as <|im_end|> into their ids.")
        .def(
            "detokenize",
            [](const Vocab &v, const std::vector<int64_t> &ids, bool special) {
                return v.decode_text(to_ids(ids), special);
            },
            py::arg("ids"), py::arg("special") = false,
            "Text of the ids (invalid UTF-8 replaced by U+FFFD); control tokens are hidden unless special.")
        .def(
            "detokenize_bytes",
            [](const Vocab &v, const std::vector<int64_t> &ids, bool special) {
                return py::bytes(v.detokenize(to_ids(ids), special));
            },
            py::arg("ids"), py::arg("special") = false)
        .def(
            "token_to_piece",
            [](const Vocab &v, int32_t id, bool special) { return py::bytes(v.token_to_piece(id, special)); },
            py::arg("id"), py::arg("special") = false)
        .def("token_text", &Vocab::token_text, py::arg("id"), "The token's text as stored in the GGUF.")
        .def(
            "token_type", [](const Vocab &v, int32_t id) { return static_cast<int>(v.token_type(id)); }, py::arg("id"))
        .def("token_id", &Vocab::token_id, py::arg("text"), "Id of the token with this exact text, -1 if none.")
        .def("is_eog", &Vocab::is_eog, py::arg("id"))
        .def("__len__", &Vocab::n_tokens)
        .def_property_readonly("n_tokens", &Vocab::n_tokens)
        .def_property_readonly("bos", &Vocab::bos)
        .def_property_readonly("eos", &Vocab::eos)
        .def_property_readonly("add_bos", &Vocab::add_bos)
        .def_property_readonly("add_eos", &Vocab::add_eos)
        .def_property_readonly("chat_template", &Vocab::chat_template)
        .def_property_readonly("model", [](const Vocab &v) { return v.kind() == Vocab::Kind::bpe ? "gpt2" : "llama"; })
        .def_property_readonly("pre", &Vocab::pre_name, "tokenizer.ggml.pre as read from the GGUF")
        .def_property_readonly("pre_tokenizer", [](const Vocab &v) { return pre_kind_name(v.pre_tokenizer()); });

    py::class_<StreamDecoder>(m, "StreamDecoder",
                              "Turns ids into text one at a time without ever emitting part of a character.")
        .def(py::init<const Vocab &, bool>(), py::arg("vocab"), py::arg("special") = false, py::keep_alive<1, 2>())
        .def("push", &StreamDecoder::push, py::arg("id"), "Text that became complete with this token (may be '').")
        .def("flush", &StreamDecoder::flush, "Whatever is held back, invalid bytes replaced by U+FFFD.");

    m.def(
        "_pretokenize",
        [](const std::string &kind, const std::string &text) {
            static const std::pair<const char *, pretok::Kind> kinds[] = {
                {"gpt2", pretok::Kind::gpt2},
                {"llama3", pretok::Kind::llama3},
                {"qwen2", pretok::Kind::qwen2},
                {"digits_gpt2", pretok::Kind::digits_gpt2},
            };
            for (const auto &k : kinds) {
                if (kind == k.first) {
                    std::vector<uint32_t> offsets;
                    const std::vector<uint32_t> cps = unicode::decode_utf8(text, &offsets);
                    std::vector<uint32_t> ends;
                    pretok::split(k.second, cps.data(), cps.size(), ends);
                    std::vector<std::string> pieces;
                    size_t begin = 0;
                    for (uint32_t end : ends) {
                        pieces.push_back(text.substr(offsets[begin], offsets[end] - offsets[begin]));
                        begin = end;
                    }
                    return pieces;
                }
            }
            throw Error("unknown pre-tokenizer '" + kind + "'");
        },
        py::arg("kind"), py::arg("text"), "Testing aid: the pieces a pre-tokenizer splits UTF-8 text into.");
    m.def(
        "_nfc", [](const std::string &text) { return unicode::nfc(text); }, py::arg("text"),
        "Testing aid: NFC of UTF-8 text.");
    m.def("_unicode_flags", [](uint32_t cp) { return unicode::flags(cp); }, py::arg("cp"));
    m.attr("UNICODE_VERSION") = unicode::version();
}
