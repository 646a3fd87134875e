"""The command line (adadecode.cli): help, flag validation, error reporting, fetch, and run.

Argument handling is tested in-process against a fake engine; the end-to-end tests at the bottom run the real
engine on SmolLM2 in a subprocess, as a user would.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

import adadecode
from adadecode import cli
from adadecode._version import __version__


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _cli(*argv: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adadecode", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("argv", [["--help"], ["fetch", "--help"], ["run", "--help"]])
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: adadecode")
    if argv[0] == "run":
        for flag in ("-m", "-p", "-f", "-n", "-t", "-c", "--temp", "--top-k", "--top-p", "--min-p", "--seed",
                     "--stop", "--json", "--heads", "--mode", "--gamma", "--max-pending", "--verbose"):  # fmt: skip
            assert f"{flag} " in out or f"{flag}," in out, flag


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_flag_has_help() -> None:
    parser = cli.build_parser()
    subs = _subparsers(parser)
    assert {"fetch", "run"} <= set(subs)
    for name, sub in [("adadecode", parser), *subs.items()]:
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys)
    assert code == 2
    assert "usage: adadecode" in err and "run" in err and "fetch" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"adadecode {__version__}"


# --------------------------------------------------------------------------------------------------------------------
# user errors: one line on stderr, exit status 1


BAD_RUN_ARGS = [
    (["-t", "0"], "--threads"),
    (["-t", "-3"], "--threads"),
    (["--gamma", "1.5"], "--gamma"),
    (["--gamma", "-0.1"], "--gamma"),
    (["-n", "0"], "--n-predict"),
    (["-n", "-3"], "--n-predict"),
    (["-c", "0"], "--ctx-size"),
    (["--temp", "-1"], "--temp"),
    (["--temp", "nan"], "--temp"),
    (["--top-p", "1.5"], "--top-p"),
    (["--min-p", "-0.5"], "--min-p"),
    (["--top-k", "-1"], "--top-k"),
    (["--seed", "-3"], "--seed"),
    (["--max-pending", "0"], "--max-pending"),
    (["--max-pending", "-2"], "--max-pending"),
    (["--mode", "standard", "--gamma", "0.8"], "--gamma"),
    (["--stop", ""], "--stop"),
    (["--mode", "adadecode"], "--heads"),
    (["--mode", "adadecode+ngram"], "--heads"),
    (["--mode", "ngram", "--max-pending", "2"], "--max-pending"),
    (["--mode", "standard", "--max-draft", "4"], "--max-draft"),
    (["--mode", "ngram", "--max-draft", "0"], "--max-draft"),
]


@pytest.mark.parametrize(("extra", "flag"), BAD_RUN_ARGS)
def test_bad_flag_values(capsys: pytest.CaptureFixture[str], extra: list[str], flag: str) -> None:
    code, out, err = _run(capsys, "run", "-m", "smollm2-135m", "-p", "hello", *extra)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("adadecode: error: ") and flag in lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "-m", "smollm2-135m", "-p", ""], "prompt is empty"),
        (["run", "-m", "smollm2-135m", "-f", "/nonexistent/prompt.txt"], "cannot read prompt file"),
        (["run", "-m", "no-such-model", "-p", "hi"], "smollm2-135m"),
        (["run", "-m", "/nonexistent/model.gguf", "-p", "hi"], "neither an existing file"),
        (["fetch", "no-such-model"], "unknown model"),
        (["fetch"], "NAME"),
    ],
)
def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("adadecode: error: ") and needle in err


def test_empty_prompt_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    prompt = tmp_path / "empty.txt"
    prompt.write_text("")
    code, _, err = _run(capsys, "run", "-m", "smollm2-135m", "-f", str(prompt))
    assert code == 1 and "prompt is empty" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "-p", "hi"])  # -m missing
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "-m", "x", "-p", "a", "-f", "b"])  # -p and -f together
    assert info.value.code == 2


def test_error_in_a_real_process_has_no_traceback() -> None:
    proc = _cli("run", "-m", "smollm2-135m", "-p", "hi", "-t", "0")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == "adadecode: error: -t/--threads must be at least 1, got 0\n"


def test_verbose_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "run", "-m", "smollm2-135m", "-p", "hi", "-t", "0", "--verbose")
    assert code == 1
    assert "Traceback" in err and err.rstrip().endswith("adadecode: error: -t/--threads must be at least 1, got 0")


# --------------------------------------------------------------------------------------------------------------------
# fetch


def test_fetch_prints_the_path(capsys: pytest.CaptureFixture[str], smollm2_path: Path, cache_dir: Path) -> None:
    code, out, err = _run(capsys, "fetch", "smollm2-135m", "--cache", str(cache_dir))
    assert code == 0
    assert out == f"{smollm2_path}\n"


def test_fetch_checks_every_name_first(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "fetch", "smollm2-135m", "no-such-model", "--cache", str(tmp_path))
    assert code == 1 and out == ""
    assert err.startswith("adadecode: error: unknown model 'no-such-model'")
    assert not (tmp_path / "models").exists()


def test_fetch_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _run(capsys, "fetch", "--list", "--cache", str(tmp_path))
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == sorted(adadecode.known_models())


# --------------------------------------------------------------------------------------------------------------------
# run, against a fake engine


@dataclass
class FakeGeneration:
    tokens: list[int]
    text: str
    stats: dict[str, Any]
    finish_reason: str = "length"


@dataclass
class FakeModel:
    path: str
    n_ctx: int = 4096
    n_threads: int | None = None
    heads: str | None = None
    n_gpu_layers: int = 0
    device: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    last_generation: FakeGeneration | None = None
    instances: ClassVar[list[FakeModel]] = []  # every model made in this test (reset by the fixture)

    PIECES = ("Waves", " fold", " into", " foam")

    def __post_init__(self) -> None:
        type(self).instances.append(self)

    def _generation(self) -> FakeGeneration:
        stats = {"n_prompt": 3, "n_generated": 4, "prefill_seconds": 0.01, "decode_seconds": 0.1,
                 "tokens_per_second": 40.0}  # fmt: skip
        return FakeGeneration([11, 12, 13, 14], "".join(self.PIECES), stats)

    def generate(self, prompt: Any, **kwargs: Any) -> FakeGeneration:
        self.calls.append({"prompt": prompt, "stream": False, **kwargs})
        self.last_generation = self._generation()
        return self.last_generation

    def generate_stream(self, prompt: Any, **kwargs: Any) -> Iterator[str]:
        self.calls.append({"prompt": prompt, "stream": True, **kwargs})
        yield from self.PIECES
        self.last_generation = self._generation()


class FakeEngineError(Exception):
    pass


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[FakeModel]:
    FakeModel.instances = []
    monkeypatch.setattr(cli, "_engine", lambda: (FakeModel, FakeEngineError))
    monkeypatch.setattr(adadecode, "Error", FakeEngineError, raising=False)
    return FakeModel


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_run_json_prints_one_object(
    capsys: pytest.CaptureFixture[str], fake_engine: type[FakeModel], model_file: Path
) -> None:
    code, out, err = _run(capsys, "run", "-m", str(model_file), "-p", "Write a haiku.", "-n", "4", "--json")
    assert code == 0
    obj = json.loads(out)
    assert out.count("\n") == 1
    assert obj["tokens"] == [11, 12, 13, 14]
    assert obj["text"] == "Waves fold into foam"
    assert obj["stats"]["n_generated"] == 4 and obj["stats"]["finish_reason"] == "length"
    call = fake_engine.instances[0].calls[0]
    assert call["stream"] is False and call["prompt"] == "Write a haiku." and call["max_tokens"] == 4


def test_run_streams_text_and_forwards_options(
    capsys: pytest.CaptureFixture[str], fake_engine: type[FakeModel], model_file: Path, tmp_path: Path
) -> None:
    heads = tmp_path / "heads.gguf"
    heads.write_bytes(b"GGUF")
    argv = ["run", "-m", str(model_file), "-p", "hi", "-n", "7", "-t", "2", "-c", "512", "--temp", "0.7",
            "--top-k", "20", "--top-p", "0.9", "--min-p", "0.1", "-s", "42", "--stop", "A", "B", "--stop", "C",
            "--heads", str(heads), "--mode", "adadecode", "--gamma", "0.6", "--max-pending", "3", "-ngl", "99",
            "--device", "CUDA1"]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    assert code == 0
    assert out == "Waves fold into foam\n"
    assert "40.0 tok/s" in err and err.startswith("adadecode: ")
    model = fake_engine.instances[0]
    assert (model.path, model.n_ctx, model.n_threads, model.heads) == (str(model_file), 512, 2, str(heads))
    assert (model.n_gpu_layers, model.device) == (99, "CUDA1")
    call = model.calls[0]
    assert call == {
        "prompt": "hi",
        "stream": True,
        "max_tokens": 7,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "min_p": 0.1,
        "seed": 42,
        "stop": ["A", "B", "C"],
        "mode": "adadecode",
        "gamma": 0.6,
        "max_pending": 3,
        "max_draft": None,
    }


def test_run_defaults(capsys: pytest.CaptureFixture[str], fake_engine: type[FakeModel], model_file: Path) -> None:
    code, _, _ = _run(capsys, "run", "-m", str(model_file), "-p", "hi")
    assert code == 0
    model = fake_engine.instances[0]
    assert (model.n_ctx, model.n_threads, model.heads) == (4096, None, None)
    call = model.calls[0]
    assert call["max_tokens"] == 128 and call["temperature"] == 0.0 and call["top_k"] == 40
    assert call["top_p"] == 0.95 and call["min_p"] == 0.05
    assert call["seed"] is None and call["stop"] is None and call["mode"] is None
    assert call["gamma"] is None and call["max_pending"] is None


def test_run_prompt_from_file_and_stdin(
    capsys: pytest.CaptureFixture[str],
    fake_engine: type[FakeModel],
    model_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("from a file\n", encoding="utf-8")
    assert _run(capsys, "run", "-m", str(model_file), "-f", str(prompt))[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    assert _run(capsys, "run", "-m", str(model_file), "-f", "-")[0] == 0
    assert [c["prompt"] for c in fake_engine.instances[0].calls + fake_engine.instances[1].calls] == [
        "from a file\n",
        "from stdin",
    ]


def test_prompts_that_are_not_utf8(
    capsys: pytest.CaptureFixture[str],
    fake_engine: type[FakeModel],
    model_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    cases = [
        (["-f", str(bad)], None, f"prompt file {bad} is not UTF-8 text: byte 0xe9 at offset 3"),
        (["-f", "-"], b"ab\xfe\xff", "the prompt on stdin is not UTF-8 text: byte 0xfe at offset 2"),
        # what Python makes of a non-UTF-8 byte in argv (PEP 383: surrogateescape)
        (["-p", "ab\udcff"], None, "the prompt is not UTF-8 text: byte 0xff at character 2"),
    ]
    for argv, stdin, message in cases:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="latin-1"))
        code, out, err = _run(capsys, "run", "-m", str(model_file), *argv)
        assert (code, out, err) == (1, "", f"adadecode: error: {message}\n")
    assert fake_engine.instances == []  # refused before any model loads


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-t", "0"], "-t/--threads must be at least 1, got 0"),
        (["-t", "-2"], "-t/--threads must be at least 1, got -2"),
        (["-c", "0"], "-c/--ctx-size must be at least 1, got 0"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1, got 0"),
        (["--max-prompt-tokens", "0"], "--max-prompt-tokens must be at least 1, got 0"),
        (["--max-queue", "0"], "--max-queue must be at least 1, got 0"),
        (["--max-choices", "0"], "--max-choices must be at least 1, got 0"),
        (["--max-body-bytes", "0"], "--max-body-bytes must be at least 1, got 0"),
        (["--port", "70000"], "--port must be at most 65535, got 70000"),
    ],
)
def test_serve_bad_flag_values(capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    code, out, err = _run(capsys, "serve", "-m", "smollm2-135m", *extra)
    assert (code, out, err) == (1, "", f"adadecode: error: {message}\n")


def test_run_interrupted_mid_generation(
    capsys: pytest.CaptureFixture[str], fake_engine: type[FakeModel], model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: FakeModel, prompt: Any, **kwargs: Any) -> Iterator[str]:
        yield "Waves"
        raise KeyboardInterrupt  # Ctrl-C while the engine generates

    monkeypatch.setattr(FakeModel, "generate_stream", interrupted)
    code, out, err = _run(capsys, "run", "-m", str(model_file), "-p", "hi")
    assert code == 130 and out == "Waves"
    assert err == "\nadadecode: interrupted\n"  # no traceback


def test_prompt_file_newlines_are_universal(
    capsys: pytest.CaptureFixture[str],
    fake_engine: type[FakeModel],
    model_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"one\r\ntwo\rthree \xe2\x9c\x93\n")
    assert _run(capsys, "run", "-m", str(model_file), "-f", str(crlf))[0] == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(crlf.read_bytes()), encoding="latin-1"))
    assert _run(capsys, "run", "-m", str(model_file), "-f", "-")[0] == 0
    prompts = [m.calls[0]["prompt"] for m in fake_engine.instances]
    assert prompts == ["one\ntwo\nthree \u2713\n"] * 2  # as text-mode reading gives, and UTF-8 whatever the locale


def test_run_escapes(capsys: pytest.CaptureFixture[str], fake_engine: type[FakeModel], model_file: Path) -> None:
    assert _run(capsys, "run", "-m", str(model_file), "-p", r"a\nb", "--stop", r"\n\n", "-e")[0] == 0
    assert _run(capsys, "run", "-m", str(model_file), "-p", r"a\nb")[0] == 0
    first, second = fake_engine.instances[0].calls[0], fake_engine.instances[1].calls[0]
    assert first["prompt"] == "a\nb" and first["stop"] == ["\n\n"]
    assert second["prompt"] == "a\\nb"


def test_engine_error_is_one_line(
    capsys: pytest.CaptureFixture[str], fake_engine: type[FakeModel], model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: FakeModel, prompt: Any, **kwargs: Any) -> Iterator[str]:
        raise FakeEngineError("context overflow: 5000 tokens > n_ctx 4096\n(details)")

    monkeypatch.setattr(FakeModel, "generate_stream", broken)
    code, out, err = _run(capsys, "run", "-m", str(model_file), "-p", "hi")
    assert code == 1
    assert err == "adadecode: error: context overflow: 5000 tokens > n_ctx 4096 (details)\n"


# --------------------------------------------------------------------------------------------------------------------
# end to end on the real engine and SmolLM2


PROMPT = "Write a haiku about the sea."


@pytest.mark.slow
def test_run_json_end_to_end(engine: Any, smollm2_path: Path) -> None:
    proc = _cli("run", "-m", str(smollm2_path), "-p", PROMPT, "-n", "16", "-t", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)  # the whole of stdout is exactly one JSON object
    assert isinstance(obj, dict)
    assert {"tokens", "text", "stats"} <= set(obj)
    assert obj["tokens"] and all(isinstance(t, int) for t in obj["tokens"])
    assert obj["stats"]["n_generated"] == len(obj["tokens"]) <= 16
    assert obj["stats"]["n_prompt"] > 0
    assert obj["text"].strip()
    if sys.platform == "linux":
        # A fresh process: a pass reads every weight of the mmapped file, so its pages all count (ru_maxrss, KiB).
        file_mib = smollm2_path.stat().st_size / 2**20
        assert file_mib <= obj["stats"]["peak_rss_mib"] < file_mib + 2048


@pytest.mark.slow
def test_run_streaming_matches_json(engine: Any, smollm2_path: Path, cache_dir: Path) -> None:
    env_cache = {**os.environ, "ADADECODE_CACHE": str(cache_dir)}
    common = ["run", "-m", "smollm2-135m", "-p", PROMPT, "-n", "24", "-t", "1"]
    streamed = subprocess.run([sys.executable, "-m", "adadecode", *common], capture_output=True, text=True,
                              env=env_cache, timeout=600)  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    as_json = _cli("run", "-m", str(smollm2_path), "-p", PROMPT, "-n", "24", "-t", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    text = json.loads(as_json.stdout)["text"]
    assert streamed.stdout in (text, text + "\n")
    assert "tok/s" in streamed.stderr


@pytest.mark.slow
def test_run_rejects_a_file_that_is_not_gguf(engine: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file" * 100)
    proc = _cli("run", "-m", str(bogus), "-p", "hi", "-n", "4")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("adadecode: error: "), proc.stderr


def test_run_past_the_context_and_stop_strings_end_to_end(
    capsys: pytest.CaptureFixture[str], engine: Any, smollm2_path: Path
) -> None:
    """The real engine in-process: -n past the context stops with "length" once the context is full, and a --stop
    string that starts inside one token's text and ends inside the next one cuts the text before it."""
    common = ["run", "-m", str(smollm2_path), "-p", "Once upon a time", "-t", "1", "--json"]
    code, out, err = _run(capsys, *common, "-c", "24", "-n", "100000")
    assert code == 0, err
    full = json.loads(out)
    code, unlimited, err = _run(capsys, *common, "-c", "24", "-n", "-1")  # llama.cpp's "no limit"
    assert code == 0 and json.loads(unlimited)["tokens"] == full["tokens"], err
    n_prompt = full["stats"]["n_prompt"]
    assert full["stats"]["finish_reason"] == "length"
    assert n_prompt + len(full["tokens"]) == 24 + 1  # the last token is sampled but needs no cache slot
    model = engine(smollm2_path, n_ctx=24, n_threads=1)
    pieces = [model.detokenize(full["tokens"][: i + 1]) for i in range(len(full["tokens"]))]
    boundary = next(i for i in range(2, len(pieces)) if len(pieces[i - 1]) - len(pieces[i - 2]) >= 2)
    cut = len(pieces[boundary - 1]) - 1  # the last character of one token's text ...
    stop = full["text"][cut : cut + 3]  # ... and the first ones of the next
    assert full["text"].find(stop) == cut and len(pieces[boundary]) >= cut + 3, (full["text"], stop)
    code, out, err = _run(capsys, *common, "-c", "24", "-n", "100000", "--stop", stop)
    assert code == 0, err
    stopped = json.loads(out)
    assert stopped["text"] == full["text"][:cut] and stopped["stats"]["finish_reason"] == "stop"
    code, out, err = _run(capsys, "run", "-m", str(smollm2_path), "-p", "Once upon a time", "-t", "1", "-c", "24",
                          "-n", "100000", "--stop", stop)  # fmt: skip
    assert code == 0, err
    assert out == full["text"][:cut] + "\n"  # streamed: nothing of the stop string leaks out
    # A prompt that fills the context leaves no room: one line naming the problem, not an empty "success".
    code, out, err = _run(capsys, "run", "-m", str(smollm2_path), "-p", "word " * 30, "-t", "1", "-c", "24")
    assert (code, out) == (1, "") and len(err.splitlines()) == 1, err
    assert err.startswith("adadecode: error: ") and "context" in err
