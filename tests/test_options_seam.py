"""The seam between Python and C++: the engine's options are bound classes whose defaults only C++ holds, the
decoding modes have one parser (C++'s Mode), and a generation's statistics have one serializer, so that Python's
stats dict and ``adadecode-cli --json`` report the same keys for the same run."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import adadecode
from adadecode import _core
from adadecode.model import MODES, Model

PROMPT = "def fibonacci(n):\n    # return the n-th Fibonacci number\n"

# Model.generate's keywords that the engine's options define, and where their C++ defaults live.
ENGINE_DEFAULTS = {
    "max_tokens": lambda o: o.max_tokens,
    "temperature": lambda o: o.sampling.temperature,
    "top_k": lambda o: o.sampling.top_k,
    "top_p": lambda o: o.sampling.top_p,
    "min_p": lambda o: o.sampling.min_p,
    "adaptive_exits": lambda o: o.adaptive_exits,
    "exits_in_drafts": lambda o: o.exits_in_drafts,
}


@pytest.fixture(scope="module")
def model(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, heads="auto", n_threads=1)


# --------------------------------------------------------------------------------------------------------------------
# defaults


@pytest.mark.parametrize("method", [Model.generate, Model.generate_stream])
def test_python_defaults_are_the_bound_class_defaults(method: Any) -> None:
    defaults = _core.DecodeOptions()
    params = inspect.signature(method).parameters
    for name, read in ENGINE_DEFAULTS.items():
        assert params[name].default == read(defaults), name
        assert type(params[name].default) is type(read(defaults)), name
    # The engine's own: None means "the engine's default", never a number repeated in Python.
    for name in ("gamma", "max_pending", "max_draft", "mode"):
        assert params[name].default is None, name


def test_config_without_arguments_is_the_engine_default(engine: Any, smollm2_path: Path) -> None:
    assert all(p.default is None for name, p in inspect.signature(Model.config).parameters.items() if name != "self")
    plain = engine(smollm2_path, n_threads=1)
    config = plain.config()
    assert config.options == _core.DecodeOptions()
    assert config.stop == [] and config.logits_processor is None


def test_floats_read_back_as_written() -> None:
    o = _core.DecodeOptions()
    assert (o.gamma, o.sampling.top_p, o.sampling.min_p) == (0.75, 0.95, 0.05)  # the C++ float's shortest text
    o.gamma = 0.3
    assert o.gamma == 0.3


def test_keyword_construction_and_nested_views() -> None:
    o = _core.DecodeOptions(max_tokens=7, gamma=0.5, mode="ngram", sampling=_core.SamplingParams(top_k=3))
    assert (o.max_tokens, o.gamma, o.mode, o.sampling.top_k) == (7, 0.5, _core.Mode.ngram, 3)
    assert o.sampling.top_p == _core.SamplingParams().top_p  # the fields not given keep their defaults
    o.sampling.seed = 42  # a view into o, not a copy
    o.ngram_options.max_draft = 4
    assert o.sampling.seed == 42 and o.ngram_options.max_draft == 4
    assert o != _core.DecodeOptions()
    assert isinstance(o.active_exits, tuple)  # appending to a copy would look like a change


# --------------------------------------------------------------------------------------------------------------------
# modes


def test_modes_round_trip() -> None:
    assert MODES == ("standard", "adadecode", "ngram", "adadecode+ngram")
    assert _core.MODE_CHOICES == ", ".join(MODES)
    for name in MODES:
        mode = _core.Mode.parse(name)
        assert str(mode) == name and _core.Mode.parse(mode) == mode
        assert _core.DecodeOptions(mode=name).mode == mode
        assert mode.uses_heads == name.startswith("adadecode") and mode.uses_ngram == name.endswith("ngram")


@pytest.mark.parametrize("bad", ["turbo", "", "Standard", "adadecode_ngram", 3, None])
def test_unknown_mode_is_refused_naming_the_choices(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"mode must be one of standard, adadecode, ngram, adadecode\+ngram, got"):
        _core.Mode.parse(bad)
    with pytest.raises(ValueError, match="mode must be one of"):
        _core.DecodeOptions(mode=bad)


def test_unknown_mode_through_the_apis(model: Any) -> None:
    with pytest.raises(ValueError, match="mode must be one of .* got 'turbo'"):
        model.generate(PROMPT, max_tokens=2, mode="turbo")
    with pytest.raises(adadecode.InvalidRequestError, match="mode must be one of .* got 'turbo'") as info:
        adadecode.Llama.from_model(model)(PROMPT, max_tokens=2, mode="turbo")
    assert info.value.param == "mode"


# --------------------------------------------------------------------------------------------------------------------
# bad options


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "message"),
    [
        (_core.DecodeOptions, {"gama": 0.5}, TypeError, "DecodeOptions has no field 'gama' \\(fields: max_tokens"),
        (_core.SamplingParams, {"temp": 0.5}, TypeError, "SamplingParams has no field 'temp'"),
        (_core.NgramOptions, {"max_drafts": 3}, TypeError, "NgramOptions has no field 'max_drafts'"),
        (_core.DecodeOptions, {"gamma": 1.5}, ValueError, "gamma must be in \\[0, 1\\], got 1.5"),
        (_core.DecodeOptions, {"gamma": float("nan")}, ValueError, "gamma must be in \\[0, 1\\], got nan"),
        (_core.DecodeOptions, {"max_pending": -1}, ValueError,
         "max_pending must be >= 1 \\(or 0: the default for the mode\\), got -1"),
        (_core.DecodeOptions, {"max_tokens": -1}, ValueError, "max_tokens must be >= 0, got -1"),
        (_core.DecodeOptions, {"n_batch": 0}, ValueError, "n_batch must be >= 1"),
        (_core.DecodeOptions, {"max_tokens": "many"}, TypeError, "DecodeOptions.max_tokens cannot be str 'many'"),
        (_core.SamplingParams, {"temperature": -1.0}, ValueError, "temperature must be a number >= 0, got -1"),
        (_core.SamplingParams, {"top_p": 2.0}, ValueError, "top_p must be in \\[0, 1\\], got 2"),
        (_core.NgramOptions, {"max_draft": 0}, ValueError, "max_draft must be >= 1, got 0"),
        (_core.NgramOptions, {"min_match": 5}, ValueError, "max_match must be >= min_match \\(5\\), got 4"),
    ],
)
def test_bad_options_name_the_field(cls: Any, kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        cls(**kwargs)


def test_a_refused_value_leaves_the_options_unchanged() -> None:
    o = _core.DecodeOptions()
    with pytest.raises(ValueError, match="top_p"):
        o.sampling.top_p = 1.5
    with pytest.raises(ValueError, match="gamma"):
        o.gamma = -0.1
    assert o == _core.DecodeOptions()


def test_engine_generate_takes_only_an_options_object(model: Any) -> None:
    ids = model.tokenize(PROMPT)
    with pytest.raises(TypeError):
        model._engine.generate(ids, 8, 0.0)  # the old positional arguments
    out = model._engine.generate(ids, _core.DecodeOptions(max_tokens=4, mode="adadecode"))
    assert len(out["tokens"]) == 4 and out["stats"]["mode"] == "adadecode"
    assert out["tokens"] == model.generate(ids, max_tokens=4, mode="standard").tokens


# --------------------------------------------------------------------------------------------------------------------
# statistics: one serializer


def _cli_binary() -> Path | None:
    package = Path(adadecode.__file__).resolve().parent
    for candidate in (package / "bin" / "adadecode-cli", package.parents[1] / "build" / "adadecode-cli"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.parametrize("mode", ["standard", "adadecode+ngram"])
def test_stats_keys_equal_between_python_and_cpp_cli(model: Any, smollm2_path: Path, mode: str) -> None:
    gen = model.generate(PROMPT, max_tokens=12, mode=mode)
    ids = model.tokenize(PROMPT)
    direct = model._engine.generate(ids, model.config(max_tokens=12, mode=mode).options)["stats"]
    assert list(gen.stats) == list(direct)  # the bindings' dict is the stats, nothing added in Python
    assert gen.stats["mode"] == mode and gen.stats["device"] == model.device and gen.stats["peak_rss_mib"] > 0
    cli = _cli_binary()
    if cli is None:
        if os.environ.get("CI"):
            pytest.fail("adadecode-cli is not installed next to the package under CI")
        pytest.skip("no adadecode-cli binary next to the package or in build/")
    argv = [str(cli), "-m", str(smollm2_path), "-p", PROMPT, "-n", "12", "-t", "1", "--mode", mode, "--json"]
    if mode != "standard":
        argv += ["--heads", model._engine.heads_path]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == ["tokens", "text", "finish_reason", "token_sources", "stats"]
    assert list(doc["stats"]) == list(gen.stats)
    assert doc["tokens"] == gen.tokens and doc["text"] == gen.text and doc["finish_reason"] == gen.finish_reason
    assert len(doc["token_sources"]) == len(doc["tokens"]) and set(doc["token_sources"]) <= set("fed")
    for key in ("n_prompt", "n_generated", "mode", "device", "exit_layers"):
        assert doc["stats"][key] == gen.stats[key], key


def test_cpp_cli_refuses_an_unknown_mode() -> None:
    cli = _cli_binary()
    if cli is None:
        pytest.skip("no adadecode-cli binary next to the package or in build/")
    proc = subprocess.run([str(cli), "-m", "x", "-p", "x", "--mode", "turbo"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "adadecode-cli: error: --mode must be one of standard, adadecode, ngram, adadecode+ngram, got 'turbo'"
    )
