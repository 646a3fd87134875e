// adadecode._core.Mode, SamplingParams, NgramOptions and DecodeOptions: the engine's options as Python classes.
// Their defaults are the C++ structs' (options.h), never repeated here or in Python. Every field is a property
// whose setter checks the value (ValueError naming the field); keyword construction refuses unknown fields.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "error.h"
#include "options.h"
#include "options_internal.h"

namespace py = pybind11;
using namespace adadecode;

namespace {

// A field's value as Python sees it. A float reads as the double of its shortest text, so 0.95f reads as 0.95; a
// list reads as a tuple, so that appending to it cannot look like a change of the options; nested options are
// views into their parent, so that `options.sampling.top_k = 5` changes `options` (and is checked).
py::object to_python(const py::object &, float x) { return py::float_(std::strtod(shortest_decimal(x).c_str(), nullptr)); }
py::object to_python(const py::object &, const std::vector<int> &x) { return py::tuple(py::cast(x)); }
py::object to_python(const py::object &parent, const SamplingParams &x) {
    return py::cast(&x, py::return_value_policy::reference_internal, parent);
}
py::object to_python(const py::object &parent, const NgramOptions &x) {
    return py::cast(&x, py::return_value_policy::reference_internal, parent);
}
template <class V>
py::object to_python(const py::object &, const V &x) {
    return py::cast(x);
}

// The fields of one options class: a property each, the keyword constructor, repr and equality.
template <class T>
class Fields {
public:
    Fields(py::class_<T> &cls, void (*check)(const T &)) : cls_(cls), check_(check) {}

    template <class V>
    Fields &add(const char *name, V T::*member, const char *doc) {
        return add_custom<V>(
            name, [member](const py::object &self) { return to_python(self, self.cast<const T &>().*member); },
            [member](T &o, const V &v) { o.*member = v; }, doc);
    }

    // A field read and written through functions (e.g. DecodeOptions.mode over layer_parallel and ngram).
    template <class V>
    Fields &add_custom(const char *name, std::function<py::object(const py::object &)> get,
                       std::function<void(T &, const V &)> put, const char *doc) {
        const std::string field = name;
        const std::string owner = py::str(cls_.attr("__name__"));
        void (*check)(const T &) = check_;
        auto set = [field, owner, put, check](T &self, py::handle value) {
            V v;
            try {
                v = value.cast<V>();
            } catch (const py::cast_error &) {
                throw py::type_error(owner + "." + field + " cannot be " +
                                     std::string(py::str(py::type::of(value).attr("__name__"))) + " " +
                                     std::string(py::repr(value)));
            }
            T changed = self;
            put(changed, v);
            try {
                check(changed);
            } catch (const Error &e) {
                throw py::value_error(e.what());
            }
            self = changed;
        };
        setters_->emplace(field, set);
        names_->push_back(field);
        cls_.def_property(
            name, [get](const py::object &self) { return get(self); }, [set](T &o, py::handle v) { set(o, v); },
            doc);
        return *this;
    }

    // Call once every field is added.
    void finish() {
        auto setters = setters_;
        auto names = names_;
        const std::string owner = py::str(cls_.attr("__name__"));
        cls_.def(py::init([setters, names, owner](const py::kwargs &kwargs) {
                     T o;
                     for (const auto &item : kwargs) {
                         const std::string key = py::str(item.first);
                         auto it = setters->find(key);
                         if (it == setters->end()) {
                             std::string known;
                             for (const std::string &n : *names) known += (known.empty() ? "" : ", ") + n;
                             throw py::type_error(owner + " has no field '" + key + "' (fields: " + known + ")");
                         }
                         it->second(o, item.second);
                     }
                     return o;
                 }),
                 ("Keyword arguments set fields; the others keep the engine's defaults. Fields: " + join(*names))
                     .c_str());
        cls_.def_property_readonly_static(
            "fields", [names](const py::object &) { return *names; }, "The field names, in order.");
        cls_.def("__repr__", [names, owner](const py::object &self) {
            std::string out = owner + "(";
            for (size_t i = 0; i < names->size(); ++i) {
                out += (i ? ", " : "") + (*names)[i] + "=" + std::string(py::repr(self.attr((*names)[i].c_str())));
            }
            return out + ")";
        });
        cls_.def("__eq__", [names](const py::object &self, const py::object &other) {
            if (!py::isinstance(other, py::type::of(self))) return false;
            for (const std::string &n : *names) {
                if (!self.attr(n.c_str()).equal(other.attr(n.c_str()))) return false;
            }
            return true;
        });
        cls_.attr("__hash__") = py::none();
    }

private:
    static std::string join(const std::vector<std::string> &names) {
        std::string out;
        for (const std::string &n : names) out += (out.empty() ? "" : ", ") + n;
        return out;
    }

    py::class_<T> &cls_;
    void (*check_)(const T &);
    std::shared_ptr<std::map<std::string, std::function<void(T &, py::handle)>>> setters_ =
        std::make_shared<std::map<std::string, std::function<void(T &, py::handle)>>>();
    std::shared_ptr<std::vector<std::string>> names_ = std::make_shared<std::vector<std::string>>();
};

Mode mode_from(py::handle value) {
    if (py::isinstance<py::str>(value)) {
        try {
            return parse_mode(value.cast<std::string>());
        } catch (const Error &e) {
            throw py::value_error(e.what());
        }
    }
    if (py::isinstance<Mode>(value)) return value.cast<Mode>();
    throw py::value_error("mode must be one of " + mode_choices() + ", got " + std::string(py::repr(value)));
}

}  // namespace

void bind_options(py::module_ &m) {
    py::enum_<Mode> mode(m, "Mode", "The decoding methods; str(mode) is the name users write.");
    mode.value("standard", Mode::standard)
        .value("adadecode", Mode::adadecode)
        .value("ngram", Mode::ngram)
        .value("adadecode_ngram", Mode::adadecode_ngram)
        .def_static("parse", [](const py::handle &name) { return mode_from(name); }, py::arg("name"),
                    "The mode spelled `name` (\"standard\", \"adadecode\", \"ngram\", \"adadecode+ngram\"); "
                    "ValueError otherwise.")
        .def_property_readonly("uses_heads", &mode_uses_heads, "True for the modes that need exit heads.")
        .def_property_readonly("uses_ngram", &mode_uses_ngram, "True for the modes with prompt-lookup drafts.");
    // Replaces the enum's own __str__ ("Mode.adadecode_ngram"): a mode prints as users spell it.
    py::setattr(mode, "__str__", py::cpp_function([](Mode x) { return std::string(mode_name(x)); },
                                                  py::is_method(mode), py::name("__str__")));
    m.attr("MODE_CHOICES") = mode_choices();

    py::class_<SamplingParams> sampling(m, "SamplingParams", "How the next token is chosen (options.h).");
    Fields<SamplingParams>(sampling, &check_sampling)
        .add("temperature", &SamplingParams::temperature, "0 = greedy")
        .add("top_k", &SamplingParams::top_k, "<= 0 disables")
        .add("top_p", &SamplingParams::top_p, ">= 1 disables")
        .add("min_p", &SamplingParams::min_p, "<= 0 disables")
        .add("seed", &SamplingParams::seed, "random seed of sampling")
        .finish();
    sampling.def_property_readonly("greedy", &SamplingParams::greedy);

    py::class_<NgramOptions> ngram(m, "NgramOptions", "Prompt-lookup drafts (options.h).");
    Fields<NgramOptions>(ngram, &check_ngram_options)
        .add("max_draft", &NgramOptions::max_draft, "tokens proposed at most per draft")
        .add("max_match", &NgramOptions::max_match, "longest suffix looked up")
        .add("min_match", &NgramOptions::min_match, "shortest suffix that may propose")
        .finish();

    py::class_<DecodeOptions> decode(m, "DecodeOptions", "What one generation is asked to do (options.h).");
    Fields<DecodeOptions>(decode, &check_options)
        .add("max_tokens", &DecodeOptions::max_tokens, "tokens to generate at most")
        .add("sampling", &DecodeOptions::sampling, "a SamplingParams")
        .add_custom<py::object>(
            "mode", [](const py::object &self) { return py::cast(self.cast<const DecodeOptions &>().mode()); },
            [](DecodeOptions &o, const py::object &v) { o.set_mode(mode_from(v)); },
            "the decoding method: a Mode or its name")
        .add("gamma", &DecodeOptions::gamma,
             "head confidence needed to emit a token early (adaptive exits may ask more)")
        .add("max_pending", &DecodeOptions::max_pending,
             "tokens whose upper layers may be deferred at once (0: the default, 8, or 5 with prompt-lookup drafts)")
        .add("active_exits", &DecodeOptions::active_exits, "subset of the heads' exit layers; empty = all")
        .add("adaptive_exits", &DecodeOptions::adaptive_exits,
             "exit layers whose early tokens fail verification too often sit out, and a confident check exits only "
             "where its measured agreement pays")
        .add("exits_in_drafts", &DecodeOptions::exits_in_drafts,
             "heads may emit while a prompt-lookup draft is in flight")
        .add("ngram_options", &DecodeOptions::ngram_options, "an NgramOptions")
        .add("n_batch", &DecodeOptions::n_batch, "prefill chunk")
        .finish();
}
