"""``adadecode bench`` on SmolLM2 with two prompts and a few tokens: the JSON has the documented fields, parity comes
from real token comparisons, a resumed run continues where it stopped, an anchor that cannot run says why.

Speed is not asserted here (see bench/README.md for the measured figures)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from adadecode import cli
from adadecode.bench import report
from adadecode.bench.runners import Skipped, start_anchor

MAX_TOKENS = 12
RECORDS = [
    {"messages": [{"role": "user", "content": "Write a Python function that reverses a string."}]},
    {"prompt": "def fibonacci(n):\n    "},
    {"messages": [{"role": "user", "content": "Name three rivers in Europe."}]},
]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "mini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


def _python_without_llama_cpp() -> str:
    """This Python when it lacks llama_cpp (CI), else a path that is no Python at all."""
    return sys.executable if importlib.util.find_spec("llama_cpp") is None else "/nonexistent/python3"


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["bench", "--no-progress", *argv])
    _, err = capsys.readouterr()
    return code, err


def _args(model: Path, task: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-m",
        str(model),
        "--heads",
        "smollm2-135m",
        "--task",
        str(task),
        "--max-tokens",
        str(MAX_TOKENS),
        "-t",
        "1",  # one thread: no spin barriers, so a loaded CI machine does not slow the test down tenfold
        "-o",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def run_doc(engine: Any, smollm2_path: Path, prompts_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-out")
    code = cli.main(
        [
            "bench",
            "--no-progress",
            *_args(
                smollm2_path,
                prompts_file,
                out,
                "--limit",
                "2",
                "--anchors",
                "llamacpp,llamacpp-spec",
                "--llamacpp-python",
                _python_without_llama_cpp(),
            ),
        ]
    )
    assert code == 0
    return out / f"smollm2-135m-{prompts_file.stem}.json"


def test_json_fields(run_doc: Path) -> None:
    doc = json.loads(run_doc.read_text())
    meta = doc["meta"]
    for key in (
        "kind",
        "command",
        "model",
        "heads",
        "task",
        "max_tokens",
        "threads",
        "modes",
        "anchors",
        "date",
        "load_average",
        "skipped",
        "n_layer",
        "exit_layers",
    ):
        assert key in meta, key
    assert meta["modes"] == ["standard", "adadecode"] and meta["threads"] == 1 and meta["max_tokens"] == MAX_TOKENS
    assert meta["command"].startswith("adadecode bench -m ")
    rows = doc["prompts"]
    assert [r["index"] for r in rows] == [0, 1]
    assert rows[0]["order"] != rows[1]["order"], "the order of the systems rotates from prompt to prompt"
    for row in rows:
        assert row["n_prompt"] > 0 and row["preview"]
        assert set(row["systems"]) == {"standard", "adadecode"}
        for result in row["systems"].values():
            assert 0 < result["n_generated"] == len(result["tokens"]) <= MAX_TOKENS
            assert result["prefill_seconds"] > 0 and result["decode_seconds"] > 0
            assert result["tokens_per_second"] == pytest.approx(result["n_generated"] / result["decode_seconds"])
        stats = row["systems"]["adadecode"]["stats"]
        assert stats["exit_layers"] and len(stats["accepted_per_layer"]) == len(stats["exit_layers"])
        assert stats["n_accepted"] <= stats["n_verified"]
    for name in ("standard", "adadecode"):
        s = doc["summary"][name]
        assert s["prompts"] == 2
        assert s["tokens"] == sum(r["systems"][name]["n_generated"] for r in rows)
        assert s["tokens_per_second"] == pytest.approx(s["tokens"] / s["decode_seconds"])
        # Our modes share this process: the summary keeps the high-water mark, not a sum over prompts.
        assert s["peak_rss_mib"] == max(r["systems"][name]["stats"]["peak_rss_mib"] for r in rows) > 0
    ada = doc["summary"]["adadecode"]
    assert ada["stats_totals"]["n_accepted"] == sum(r["systems"]["adadecode"]["stats"]["n_accepted"] for r in rows)
    assert ada["early_exit_fraction"] == pytest.approx(ada["stats_totals"]["n_accepted"] / ada["tokens"])
    assert "speedup_vs_standard" in ada and "median_prompt_speedup_vs_standard" in ada


def test_skipped_anchors_say_why(run_doc: Path) -> None:
    doc = json.loads(run_doc.read_text())
    skipped = doc["meta"]["skipped"]
    assert set(skipped) == {"llamacpp", "llamacpp-spec"}
    assert "llama_cpp" in skipped["llamacpp"] or "no Python executable" in skipped["llamacpp"]
    assert "--draft-model" in skipped["llamacpp-spec"]
    md = run_doc.with_suffix(".md").read_text()
    assert "| adadecode |" in md and "| standard |" in md
    assert "**llamacpp: skipped**" in md and "**llamacpp-spec: skipped**" in md
    assert "smollm2-135m" in (run_doc.parent / "summary.md").read_text()


def test_parity_is_token_for_token(run_doc: Path) -> None:
    doc = json.loads(run_doc.read_text())
    for row in doc["prompts"]:
        std, ada = row["systems"]["standard"], row["systems"]["adadecode"]
        assert ada["parity"]["standard"]["match"] == (ada["tokens"] == std["tokens"])
        assert ada["tokens"] == std["tokens"], "greedy adadecode must reproduce standard decoding"
        assert "parity" in std and "standard" not in std["parity"]
    assert doc["summary"]["adadecode"]["parity_vs_standard"] == {"matched": 2, "compared": 2, "rate": 1.0}


def test_plots_written(run_doc: Path) -> None:
    pytest.importorskip("matplotlib")
    doc = json.loads(run_doc.read_text())
    assert {"smollm2-135m-mini-tokens-per-second.png", "smollm2-135m-mini-exit-layers.png"} <= set(doc["meta"]["plots"])
    for name in doc["meta"]["plots"]:
        assert (run_doc.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parity_flips_when_outputs_differ(
    engine: Any,
    smollm2_path: Path,
    prompts_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Corrupt one token of the adadecode output: the bench must notice it at that position."""
    original = engine.generate

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        g = original(self, *args, **kwargs)
        if kwargs.get("mode") == "adadecode" and len(g.tokens) > 3:
            g.tokens[3] = (g.tokens[3] + 1) % self.n_vocab
        return g

    monkeypatch.setattr(engine, "generate", generate)
    code, err = _bench(capsys, *_args(smollm2_path, prompts_file, tmp_path, "--limit", "2", "--anchors", "none"))
    assert code == 0, err
    doc = json.loads((tmp_path / "smollm2-135m-mini.json").read_text())
    for row in doc["prompts"]:
        assert row["systems"]["adadecode"]["parity"]["standard"] == {"match": False, "first_mismatch": 3}
    assert doc["summary"]["adadecode"]["parity_vs_standard"]["matched"] == 0
    assert "| adadecode |" in (tmp_path / "smollm2-135m-mini.md").read_text()


def test_resume_continues(
    engine: Any, smollm2_path: Path, prompts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _args(smollm2_path, prompts_file, tmp_path, "--modes", "standard", "--anchors", "none")
    assert _bench(capsys, *base, "--limit", "1")[0] == 0
    path = tmp_path / "smollm2-135m-mini.json"
    first = json.loads(path.read_text())["prompts"]
    assert len(first) == 1
    assert _bench(capsys, *base, "--limit", "3", "--resume")[0] == 0
    rows = json.loads(path.read_text())["prompts"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[0] == first[0], "a resumed run keeps the prompts it already measured"
    assert len(json.loads(path.read_text())["meta"]["resumed"]) == 1
    code, err = _bench(capsys, *base, "--limit", "3", "--resume", "--max-tokens", "5")
    assert code == 1 and "differs in max_tokens" in err
    doc = json.loads(path.read_text())
    doc["meta"]["kernels"]["matmul"] = "a family this process does not run"
    path.write_text(json.dumps(doc))
    code, err = _bench(capsys, *base, "--limit", "3", "--resume")
    assert code == 1 and "differs in kernels" in err


def test_run_names_its_kernels_and_engine_settings(
    engine: Any,
    smollm2_path: Path,
    prompts_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ADADECODE_QMATMUL=avx2 on an AVX-512 CPU runs other kernels than the CPU class says: the file must say so."""
    from adadecode import _core

    monkeypatch.setenv("ADADECODE_QMATMUL_TWO_ROWS", "2")  # the default: read at start-up, it changes nothing here
    monkeypatch.setenv("ADADECODE_CACHE", str(Path.home() / ".cache" / "adadecode"))
    args = _args(smollm2_path, prompts_file, tmp_path, "--limit", "1", "--modes", "standard", "--anchors", "none")
    assert _bench(capsys, *args)[0] == 0
    meta = json.loads((tmp_path / "smollm2-135m-mini.json").read_text())["meta"]
    assert meta["kernels"] == {"matmul": _core.matmul_family(), "attention": _core.attention_family()}
    settings, bench = meta["command"].split(" adadecode bench ", 1)
    assert "ADADECODE_QMATMUL_TWO_ROWS=2" in settings.split() and bench
    assert "ADADECODE_CACHE" not in meta["command"], "where files live does not change the figures"
    header = (tmp_path / "smollm2-135m-mini.md").read_text()
    assert f"kernels: matmul {_core.matmul_family()}, attention {_core.attention_family()}" in header


def test_missing_python_is_skipped(smollm2_path: Path) -> None:
    anchor = start_anchor("llamacpp-ngram", str(smollm2_path), 1, 256, [], llamacpp_python="/nonexistent/python3")
    assert isinstance(anchor, Skipped) and "/nonexistent/python3" in anchor.reason


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anchors", "vllm"], "unknown anchor(s) vllm"),
        (["--modes", "standard,standard"], "lists a mode twice"),
        (["--max-tokens", "0"], "--max-tokens must be >= 1"),
        (["--modes", "turbo"], "--modes: mode must be one of"),
    ],
)
def test_bad_arguments(
    engine: Any,
    smollm2_path: Path,
    prompts_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code, err = _bench(capsys, *_args(smollm2_path, prompts_file, tmp_path, "--anchors", "none"), *extra)
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_parity_helper() -> None:
    assert report.parity([1, 2, 3], [1, 2, 3]) == {"match": True, "first_mismatch": None}
    assert report.parity([1, 2, 3], [1, 5, 3]) == {"match": False, "first_mismatch": 1}
    assert report.parity([1, 2], [1, 2, 3]) == {"match": False, "first_mismatch": 2}


def test_humaneval_prompts_use_the_chat_template(engine: Any, smollm2_path: Path, cache_dir: Path) -> None:
    from adadecode.bench.tasks import load_prompts

    model = engine(str(smollm2_path), n_ctx=512)
    prompts = load_prompts(model, "humaneval", cache_dir / "data", limit=2)
    assert [p.index for p in prompts] == [0, 1] and all(p.source == "humaneval" for p in prompts)
    text = model.detokenize(prompts[0].ids, special=True)
    assert "has_close_elements" in text and text.startswith("<|im_start|>") and text.endswith("assistant\n")


LLAMACPP_PYTHON = os.environ.get("ADADECODE_LLAMACPP_PYTHON")


@pytest.mark.skipif(not LLAMACPP_PYTHON, reason="set ADADECODE_LLAMACPP_PYTHON to a Python with llama-cpp-python")
def test_llamacpp_anchors(
    engine: Any, smollm2_path: Path, prompts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _bench(
        capsys,
        *_args(
            smollm2_path,
            prompts_file,
            tmp_path,
            "--limit",
            "1",
            "--modes",
            "standard",
            "--anchors",
            "llamacpp,llamacpp-ngram,llamacpp-spec",
            "--draft-model",
            str(smollm2_path),
        ),
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "smollm2-135m-mini.json").read_text())
    assert doc["meta"]["skipped"] == {}
    systems = doc["prompts"][0]["systems"]
    for name in ("llamacpp", "llamacpp-ngram", "llamacpp-spec"):
        assert 0 < len(systems[name]["tokens"]) <= MAX_TOKENS
        assert systems[name]["parity"]["standard"]["match"] == (
            systems[name]["tokens"] == systems["standard"]["tokens"]
        )
    spec = systems["llamacpp-spec"]["stats"]
    assert 0 < spec["n_draft_accepted"] <= spec["n_drafted"]


@pytest.mark.slow
def test_llamacpp_greedy_parity_script(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    # bench/llamacpp_greedy_parity.py end to end, where a Python with llama-cpp-python is configured (not in CI).
    python = os.environ.get("ADADECODE_LLAMACPP_PYTHON")
    if not python:
        pytest.skip("set ADADECODE_LLAMACPP_PYTHON to a Python with llama-cpp-python")
    import subprocess

    script = Path(__file__).resolve().parent.parent / "bench" / "llamacpp_greedy_parity.py"
    argv = [sys.executable, str(script), "-m", str(smollm2_path), "--prompts", "2", "-n", "16", "-o", str(tmp_path)]
    proc = subprocess.run([*argv, "--llamacpp-python", python], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "smollm2-135m.json").read_text())
    assert doc["summary"]["prompts"] == 2 and doc["summary"]["unexplained"] == 0
    for row in doc["prompts"]:
        assert row["match"] == (row["ours_tokens"] == row["llamacpp_tokens"])
        assert row["ours_decode_vs_forced"]["max_abs"] in (None, 0.0)  # our engine is batch invariant
        if not row["match"]:
            at = row.get("at_mismatch_decode") or row["at_mismatch_forced"]
            assert at["ours_top2"][0]["id"] != at["llamacpp_top2"][0]["id"]


def _load_check_disturbed() -> Any:
    path = Path(__file__).resolve().parent.parent / "bench" / "check_disturbed.py"
    spec = importlib.util.spec_from_file_location("check_disturbed", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_disturbed_flags_a_slowed_prompt_not_a_heavy_one() -> None:
    # A run whose ngram timings follow one cost model (a pass 1 unit, an extra row 0.2) with a little noise; prompt 3
    # carries far more rows per pass than the others (legitimately slow per pass), prompt 7 was slowed 2.5x.
    check = _load_check_disturbed()
    prompts = []
    for i in range(20):
        passes = 100 + 7 * i
        two_row = passes * (i % 5) // 5
        rows = [0, passes - two_row, two_row] if i != 3 else [0, 10, 0, 0, 0, 0, 0, 0, passes - 10]
        extra = sum((r - 1) * n for r, n in enumerate(rows) if r > 0)
        noise = 1.0 + 0.02 * ((i * 37) % 5 - 2)
        seconds = 0.02 * (passes + 0.2 * extra) * noise * (2.5 if i == 7 else 1.0)
        prompts.append(
            {
                "index": i,
                "order": ["standard", "ngram"],
                "systems": {
                    "standard": {"decode_seconds": 0.02 * 256, "stats": {"rows_per_pass": [0, 256]}},
                    "ngram": {"decode_seconds": seconds, "stats": {"rows_per_pass": rows}},
                },
            }
        )
    flagged = check.outliers({"prompts": prompts}, 5.0)
    assert [(index, name) for index, name, _, _ in flagged] == [(7, "ngram")]
    assert 2.2 < flagged[0][3] < 2.8


def test_cpu_class_names_the_kernel_family() -> None:
    from adadecode.bench.machine import cpu_class, cpu_name

    assert cpu_class({"avx2", "avx512f", "avx512bw", "avx512vl"}) == "AVX-512"
    assert cpu_class({"avx2", "avx512f"}) == "AVX2"  # AVX-512F alone lacks what the kernels use
    assert cpu_class({"avx2", "fma"}) == "AVX2" and cpu_class({"neon"}) == "other"
    assert cpu_class() in ("AVX-512", "AVX2", "other") and cpu_name()


def test_cache_sizes_read_from_sysfs(tmp_path: Path) -> None:
    from adadecode.bench.machine import cache_kib, cpu_detail_words

    for index, (level, kind, size) in enumerate(
        [("1", "Data", "48K"), ("1", "Instruction", "64K"), ("2", "Unified", "2048K"), ("3", "Unified", "480M")]
    ):
        d = tmp_path / f"index{index}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(value + "\n")
    (tmp_path / "index4").mkdir()  # no files: skipped
    sizes = cache_kib(tmp_path)
    assert sizes == {"l1": 48, "l2": 2048, "l3": 491520}
    assert cache_kib(tmp_path / "absent") == {}
    words = cpu_detail_words({"cpu_signature": "GenuineIntel family 6 model 167 stepping 1", "cache_kib": sizes})
    assert words == " (GenuineIntel family 6 model 167 stepping 1, L2 2 MiB, L3 480 MiB)"
    assert cpu_detail_words({"cpu": "older file"}) == ""


def test_exit_draft_overlap_counts_shared_positions() -> None:
    def row(ada: str, ngram: str, same: bool = True) -> dict[str, Any]:
        tokens = list(range(len(ada)))
        return {
            "systems": {
                "adadecode": {"tokens": tokens, "token_sources": ada},
                "ngram": {"tokens": tokens if same else tokens[::-1], "token_sources": ngram},
            }
        }

    rows = [row("feef", "fddf"), row("eeff", "ffdd"), row("eeee", "dddd", same=False)]
    got = report.exit_draft_overlap(rows)
    assert got is not None and got["prompts"] == 2 and got["tokens"] == 8  # outputs that differ are left out
    assert got["adadecode_early"] == 4 and got["also_drafted_by_ngram"] == 2
    assert got["shared_fraction_of_early"] == pytest.approx(0.5)
    assert got["early_outside_drafts_fraction"] == pytest.approx(2 / 8)
    assert report.exit_draft_overlap([{"systems": {"adadecode": {"tokens": [1], "token_sources": "e"}}}]) is None
    doc = {"meta": {"model_name": "m", "task": "t", "max_tokens": 4, "threads": 1, "command": "c", "date": "d"},
           "summary": {}, "prompts": rows, "exit_draft_overlap": got}  # fmt: skip
    assert "50.0% sit where ngram drafted the same token; the rest, 25.0% of all tokens" in report.run_markdown(doc)


def test_markdown_compares_with_llamacpps_own_programs() -> None:
    """With llama.cpp's own programs among the anchors, "× llama.cpp" is against llama-completion, and a line gives
    issue 23's two checks: standard against its greedy decoding, prompt lookup against its fastest lookup type."""

    def result(tokens: int, seconds: float) -> dict[str, Any]:
        return {"tokens": list(range(tokens)), "decode_seconds": seconds, "prefill_seconds": 0.1}

    speeds = [  # per prompt: standard, ngram, llama.cpp greedy, its simple and map-k lookups (tokens in 1 s)
        (30, 60, 25, 28, 33),
        (40, 100, 25, 30, 35),
    ]
    rows = [{"n_prompt": 10, "systems": {"standard": result(a, 1), "ngram": result(b, 1), "llamacpp-bin": result(c, 1),
                                         "llamacpp-bin-ngram-simple": result(d, 1),
                                         "llamacpp-bin-ngram-map-k": result(e, 1)}} for a, b, c, d, e in speeds]
    for row in rows:
        report.add_parity(row)
    systems = ["standard", "ngram", "llamacpp-bin", "llamacpp-bin-ngram-simple", "llamacpp-bin-ngram-map-k"]
    doc = {"meta": {"model_name": "m", "task": "t", "max_tokens": 4, "threads": 1, "command": "c", "date": "d"},
           "summary": report.summarize(rows, systems), "prompts": rows}  # fmt: skip
    md = report.run_markdown(doc)
    assert "| standard | 35.00 | 1.00× | 1.00× | 1.40× |" in md  # 70 tokens / 50
    assert "(× llama.cpp: to llamacpp-bin)" in md
    assert ("standard 1.40× llama.cpp greedy (`llamacpp-bin`, 25.00 tok/s; per prompt median 1.40×, 1.20-1.60×)"
            in md)
    # the fastest lookup is map-k (34 tok/s): ngram 80 / 34 overall, 60/33 and 100/35 per prompt
    assert (f"ngram {80 / 34:.2f}× llama.cpp's fastest prompt lookup (`llamacpp-bin-ngram-map-k`, 34.00 tok/s; "
            f"per prompt median {(60 / 33 + 100 / 35) / 2:.2f}×, {60 / 33:.2f}-{100 / 35:.2f}×)") in md
    assert "adadecode+ngram" not in md.split("Against")[1]  # a mode that did not run is left out
    without = {**doc, "summary": report.summarize(rows, ["standard", "ngram"])}
    assert "Against llama.cpp" not in report.run_markdown(without)
