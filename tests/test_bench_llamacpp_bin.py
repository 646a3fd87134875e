"""The llamacpp-bin anchors of ``adadecode bench`` (llama.cpp's own llama-completion and llama-speculative-simple):
their command-line options, the parsing of what the programs print (recorded samples in tests/data/llamacpp_bin, from
the llama.cpp that bench/build_llamacpp.sh builds, on SmolLM2 with 8 tokens), a skipped anchor's reason, and one real
run when the programs are built (skipped otherwise). Speed is not asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adadecode import cli
from adadecode.bench import llamacpp_bin
from adadecode.bench.llamacpp_bin import LlamaCppBinError
from adadecode.bench.runners import Skipped, start_anchor

DATA = Path(__file__).parent / "data" / "llamacpp_bin"
SAMPLE = json.loads((DATA / "smollm2-8.ids.json").read_text(encoding="utf-8"))  # prompt ids, standard's 8 tokens


def test_completion_stderr_parsed() -> None:
    stats = llamacpp_bin.parse_completion_stderr((DATA / "completion-smollm2-8.stderr").read_text(encoding="utf-8"))
    assert stats == {
        "prefill_seconds": pytest.approx(0.57322),
        "n_prompt_eval": 39,
        "decode_seconds": pytest.approx(0.24794),
        "n_eval": 8,
        "sampling_seconds": pytest.approx(0.00499),
    }


def test_speculative_stderr_parsed() -> None:
    text = (DATA / "speculative-ngram-simple-smollm2-8.stderr").read_text(encoding="utf-8")
    stats = llamacpp_bin.parse_speculative_stderr(text)
    assert stats == {
        "prefill_seconds": pytest.approx(0.441),
        "n_prompt_eval": 40,
        "decode_seconds": pytest.approx(0.214),
        "n_decoded": 8,
        "n_drafted": 0,
        "n_draft_accepted": 0,
    }
    # The same program's perf lines ("eval time") are not mistaken for its own summary.
    assert "decoded" in text and "eval time" in text


@pytest.mark.parametrize("parse", [llamacpp_bin.parse_completion_stderr, llamacpp_bin.parse_speculative_stderr])
def test_output_without_timings_is_an_error(parse: Any) -> None:
    with pytest.raises(LlamaCppBinError, match="printed no timings"):
        parse("error: failed to load model\n")


def test_session_file_tokens(tmp_path: Path) -> None:
    seen = llamacpp_bin.read_session_tokens(DATA / "completion-smollm2-8.session-head")
    assert seen == SAMPLE["ids"] + SAMPLE["std"]
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(8))
    with pytest.raises(LlamaCppBinError, match="not a llama.cpp session file"):
        llamacpp_bin.read_session_tokens(bad)
    short = tmp_path / "short.bin"
    short.write_bytes((DATA / "completion-smollm2-8.session-head").read_bytes()[:40])
    with pytest.raises(LlamaCppBinError, match="truncated"):
        llamacpp_bin.read_session_tokens(short)


def test_speculative_text(engine: Any, smollm2_path: Path) -> None:
    vocab = engine(str(smollm2_path), n_ctx=256).vocab
    stdout = (DATA / "speculative-ngram-simple-smollm2-8.stdout").read_bytes()
    prompt = vocab.detokenize_bytes(SAMPLE["ids"], True)
    text = llamacpp_bin.speculative_generated_text(stdout, prompt)
    assert text == vocab.detokenize_bytes(SAMPLE["std"], True)
    assert list(vocab.tokenize(text, False, True)) == SAMPLE["std"]
    with pytest.raises(LlamaCppBinError, match="does not echo the prompt"):
        llamacpp_bin.speculative_generated_text(stdout, b"another prompt")


def test_spec_types_from_help() -> None:
    types = llamacpp_bin.supported_spec_types((DATA / "speculative-help-excerpt.txt").read_text(encoding="utf-8"))
    assert {"ngram-simple", "ngram-mod", "ngram-map-k"} <= set(types) and "none" in types
    assert llamacpp_bin.supported_spec_types("usage: something else") == []


def test_group_expands() -> None:
    assert llamacpp_bin.expand(["standard-ish", "llamacpp-bin", "llamacpp-bin-ngram", "llamacpp-bin-ngram-mod"]) == [
        "standard-ish",
        "llamacpp-bin",
        "llamacpp-bin-ngram-simple",
        "llamacpp-bin-ngram-mod",
        "llamacpp-bin-ngram-map-k",
    ]


def test_command_line(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    model = engine(str(smollm2_path), n_ctx=256)
    anchor = start_anchor(
        "llamacpp-bin", str(smollm2_path), 3, 200, [], llamacpp_bin_dir=str(tmp_path), vocab=model.vocab
    )
    assert isinstance(anchor, Skipped)
    fake = tmp_path / "llama-completion"
    fake.write_text("#!/bin/sh\necho 'version: 1234 (abcdef)' >&2\n", encoding="utf-8")
    fake.chmod(0o755)
    anchor = start_anchor(
        "llamacpp-bin", str(smollm2_path), 3, 200, [], llamacpp_bin_dir=str(tmp_path), vocab=model.vocab
    )
    assert not isinstance(anchor, Skipped)
    assert anchor.info["version"] == "1234 (abcdef)"
    args = anchor.common_args(Path("p.txt"), 16)
    assert args[0] == str(fake)
    assert args[args.index("-m") + 1] == str(smollm2_path) and args[args.index("-f") + 1] == "p.txt"
    assert args[args.index("-n") + 1] == "16" and args[args.index("-c") + 1] == "200"
    assert args[args.index("-t") + 1] == "3" and args[args.index("-tb") + 1] == "3"
    assert args[args.index("--temp") + 1] == "0" and args[args.index("--top-k") + 1] == "1"
    assert "--no-escape" in args
    # The prompt handed over is our template's text, special tokens spelled out.
    assert anchor._prompt_bytes(SAMPLE["ids"]).startswith(b"<|im_start|>system\n")


def test_missing_binaries_are_skipped_with_a_reason(engine: Any, smollm2_path: Path, tmp_path: Path) -> None:
    vocab = engine(str(smollm2_path), n_ctx=256).vocab
    for name in ("llamacpp-bin", "llamacpp-bin-ngram-simple"):
        anchor = start_anchor(name, str(smollm2_path), 1, 256, [], llamacpp_bin_dir=str(tmp_path), vocab=vocab)
        assert isinstance(anchor, Skipped)
        program = "llama-completion" if name == "llamacpp-bin" else "llama-speculative-simple"
        assert (
            anchor.reason.startswith("binary not found") and program in anchor.reason and str(tmp_path) in anchor.reason
        )


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-bin") / "mini.jsonl"
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Write a Python function that reverses a string."}]})
        + "\n",
        encoding="utf-8",
    )
    return path


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["bench", "--no-progress", *argv])
    _, err = capsys.readouterr()
    return code, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anchors", "none", "--llamacpp-bin", "."], "--llamacpp-bin is only for the llamacpp-bin anchors"),
        (["--anchors", "llamacpp-bin", "--llamacpp-bin", "/nonexistent/dir"], "/nonexistent/dir: no such folder"),
        (["--anchors", "llamacpp-bin-ngrams"], "unknown anchor(s) llamacpp-bin-ngrams"),
    ],
)
def test_bad_arguments(
    smollm2_path: Path,
    prompts_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code, err = _bench(capsys, "-m", str(smollm2_path), "--task", str(prompts_file), "-o", str(tmp_path), *extra)
    assert code == 1 and message in err, err


def test_skipped_anchors_in_the_report(
    engine: Any, smollm2_path: Path, prompts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _bench(
        capsys,
        *("-m", str(smollm2_path), "--task", str(prompts_file), "--max-tokens", "4", "-t", "1", "-o", str(tmp_path)),
        *("--modes", "standard", "--anchors", "llamacpp-bin,llamacpp-bin-ngram", "--llamacpp-bin", str(empty)),
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "smollm2-135m-mini.json").read_text(encoding="utf-8"))["meta"]
    assert set(meta["skipped"]) == {"llamacpp-bin", *llamacpp_bin.SPEC_TYPES}
    assert all("binary not found" in why for why in meta["skipped"].values())
    assert meta["anchors"] == ["llamacpp-bin", "llamacpp-bin-ngram"]


def _built() -> Path | None:
    folder, _ = llamacpp_bin.default_bin_dir()
    ok = all(llamacpp_bin.executable(folder, p) for p in (llamacpp_bin.COMPLETION, llamacpp_bin.SPECULATIVE))
    return folder if ok else None


@pytest.mark.skipif(_built() is None, reason="llama.cpp's programs are not built (bash bench/build_llamacpp.sh)")
def test_real_run(
    engine: Any, smollm2_path: Path, prompts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _bench(
        capsys,
        *("-m", str(smollm2_path), "--task", str(prompts_file), "--max-tokens", "8", "-t", "1", "-o", str(tmp_path)),
        *("--modes", "standard", "--anchors", "llamacpp-bin,llamacpp-bin-ngram", "--llamacpp-bin", str(_built())),
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "smollm2-135m-mini.json").read_text(encoding="utf-8"))
    assert doc["meta"]["skipped"] == {}
    systems = doc["prompts"][0]["systems"]
    greedy = systems["llamacpp-bin"]
    assert greedy["stats"]["prompt_ids_match"] is True
    assert 0 < len(greedy["tokens"]) <= 8 and greedy["decode_seconds"] > 0 and greedy["tokens_per_second"] > 0
    for name in ("llamacpp-bin", *llamacpp_bin.SPEC_TYPES):
        r = systems[name]
        assert 0 < len(r["tokens"]) <= 8 and r["decode_seconds"] > 0
        assert r["parity"]["standard"]["match"] == (r["tokens"] == systems["standard"]["tokens"])
    for name in llamacpp_bin.SPEC_TYPES:
        assert systems[name]["stats"]["tokens_from_text"] is True
        assert systems[name]["parity"]["llamacpp-bin"]["match"] == (systems[name]["tokens"] == greedy["tokens"])
    assert set(doc["meta"]["anchor_info"]) == {"llamacpp-bin", *llamacpp_bin.SPEC_TYPES}
