"""llama.cpp's own programs as anchors of ``adadecode bench``: the reference a user would run, not llama.cpp through
Python bindings. Built by ``bench/build_llamacpp.sh`` into ``~/.cache/adadecode/llamacpp-bin/bin`` (the default of
``--llamacpp-bin``; ``$ADADECODE_LLAMACPP_BIN`` overrides it). One process per prompt, so the figures are the
programs' own timings from stderr, not our wall clock:

- ``llamacpp-bin``: ``llama-completion``, greedy (``--temp 0 --top-k 1``), the prompt exactly as our chat template
  renders it (``-no-cnv``: no template of its own, ``--no-escape``). The generated ids are exact:
  ``--prompt-cache-all`` saves every token the context saw, prompt included, which also checks that llama.cpp
  tokenized the prompt to our ids (``prompt_ids_match``). Decode seconds = its ``eval time`` (sampling is reported
  apart, as ``sampling_seconds``): ``n_eval`` single-token passes, the first over the prompt's last token (the prompt
  cache splits it off to save the state before it, as llama-speculative-simple does too, so that both take the same
  first step), so one pass more than our modes' decode seconds count (they start at the first token) — under 1 % of
  a 256-token answer, and against llama.cpp.
- ``llamacpp-bin-ngram`` stands for three anchors, prompt lookup through ``llama-speculative-simple --spec-type T``
  with llama.cpp's default n-gram settings: ``llamacpp-bin-ngram-simple``, ``-ngram-mod`` and ``-ngram-map-k`` (the
  summary shows which is best). Decode seconds = its ``decoded N tokens in S seconds``, which also counts the pass
  over the prompt's last token, as above. It prints text, not ids: the ids are our tokenizer's encoding of that text
  (``tokens_from_text``; the text is kept as ``text``), exact for parity unless the model chose a non-canonical
  tokenization (seen at the very end of a text: "```\n\n" cut after its first newline encodes otherwise).
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..fetch import cache_root
from .errors import WorkerError

LLAMACPP_BIN_ENV = "ADADECODE_LLAMACPP_BIN"
GREEDY = "llamacpp-bin"
NGRAM_GROUP = "llamacpp-bin-ngram"
SPEC_TYPES = {
    "llamacpp-bin-ngram-simple": "ngram-simple",
    "llamacpp-bin-ngram-mod": "ngram-mod",
    "llamacpp-bin-ngram-map-k": "ngram-map-k",
}
BIN_ANCHORS = (GREEDY, NGRAM_GROUP, *SPEC_TYPES)
COMPLETION = "llama-completion"
SPECULATIVE = "llama-speculative-simple"
_SESSION_MAGIC = 0x6767736E  # 'ggsn', llama.cpp's session files
_TIMEOUT_S = 1800


class LlamaCppBinError(WorkerError):
    """A run that failed: the bench drops the anchor from the remaining prompts and says why."""


def expand(anchors: list[str]) -> list[str]:
    """The anchor list with the group ``llamacpp-bin-ngram`` replaced by its members (each once)."""
    out: list[str] = []
    for a in anchors:
        for name in SPEC_TYPES if a == NGRAM_GROUP else (a,):
            if name not in out:
                out.append(name)
    return out


def default_bin_dir() -> tuple[Path, str]:
    """(the folder, where the choice came from)."""
    if os.environ.get(LLAMACPP_BIN_ENV):
        return Path(os.environ[LLAMACPP_BIN_ENV]).expanduser(), f"${LLAMACPP_BIN_ENV}"

    return cache_root() / "llamacpp-bin" / "bin", "the default"


def executable(bin_dir: Path, program: str) -> Path | None:
    path = bin_dir / program
    return path if path.is_file() and os.access(path, os.X_OK) else None


# ---------------------------------------------------------------------------------------------------------------
# What the programs print


def _float(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.MULTILINE)


def parse_completion_stderr(text: str) -> dict[str, Any]:
    """llama-completion's performance lines (llama_perf_context_print / llama_perf_sampler_print)."""
    prompt = _float(r"prompt eval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) tokens", text)
    evals = _float(r"^(?!.*prompt).*\beval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) runs", text)
    sampling = _float(r"sampling time\s*=\s*([\d.]+) ms", text)
    if prompt is None or evals is None:
        raise LlamaCppBinError(f"{COMPLETION} printed no timings (no 'prompt eval time' / 'eval time' line)")
    out: dict[str, Any] = {
        "prefill_seconds": float(prompt.group(1)) / 1e3,
        "n_prompt_eval": int(prompt.group(2)),
        "decode_seconds": float(evals.group(1)) / 1e3,
        "n_eval": int(evals.group(2)),
    }
    if sampling:
        out["sampling_seconds"] = float(sampling.group(1)) / 1e3
    return out


def parse_speculative_stderr(text: str) -> dict[str, Any]:
    """llama-speculative-simple's summary: encoded/decoded lines and the draft counts."""
    enc = _float(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds", text)
    dec = _float(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", text)
    if enc is None or dec is None:
        raise LlamaCppBinError(f"{SPECULATIVE} printed no timings (no 'encoded ... tokens' / 'decoded ...' line)")
    out: dict[str, Any] = {
        "prefill_seconds": float(enc.group(2)),
        "n_prompt_eval": int(enc.group(1)),
        "decode_seconds": float(dec.group(2)),
        "n_decoded": int(dec.group(1)),
    }
    # Named as the llama-cpp-python anchors name them, so that the summary's draft figures cover both.
    for key, name in (("n_drafted", "n_drafted"), ("n_accept", "n_draft_accepted")):
        m = _float(rf"\b{key}\s*=\s*(\d+)", text)
        if m:
            out[name] = int(m.group(1))
    return out


def read_session_tokens(path: Path) -> list[int]:
    """The token ids at the start of a llama.cpp session file (--prompt-cache): magic, version, count, ids."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12:
            raise LlamaCppBinError(f"{path}: not a llama.cpp session file (too short)")
        magic, _version, n = struct.unpack("<III", head)
        if magic != _SESSION_MAGIC:
            raise LlamaCppBinError(f"{path}: not a llama.cpp session file (magic {magic:#x})")
        data = f.read(4 * n)
    if len(data) != 4 * n:
        raise LlamaCppBinError(f"{path}: truncated ({len(data) // 4} of {n} token ids)")
    return list(struct.unpack(f"<{n}i", data))


def speculative_generated_text(stdout: bytes, prompt: bytes) -> bytes:
    """llama-speculative-simple prints two newlines, the prompt's pieces, the generated ones, and four newlines (two
    after decoding, two at exit); its other messages go to stderr."""
    at = stdout.find(prompt)
    if at < 0:
        raise LlamaCppBinError(f"{SPECULATIVE}: its output does not echo the prompt, so the generated text is unknown")
    text = stdout[at + len(prompt) :]
    if not text.endswith(b"\n\n\n\n"):
        raise LlamaCppBinError(f"{SPECULATIVE}: its output does not end as expected (four newlines)")
    return text[:-4]


def supported_spec_types(help_text: str) -> list[str]:
    """The --spec-type values a llama-speculative-simple --help lists."""
    m = re.search(r"--spec-type\s+(\S+)", help_text)
    return [t for t in re.split(r"[,|]", m.group(1).strip("[]")) if t] if m else []


# ---------------------------------------------------------------------------------------------------------------
# Running them


def _run(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise LlamaCppBinError(f"{Path(cmd[0]).name} did not finish in {_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise LlamaCppBinError(f"cannot run {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
        raise LlamaCppBinError(f"{Path(cmd[0]).name} exited with status {proc.returncode}: {tail}")
    return proc


class BinaryAnchor:
    """One llama.cpp program run per prompt; same interface as the other systems (see runners.py)."""

    def __init__(
        self, name: str, program: Path, model_path: str, threads: int, n_ctx: int, vocab: Any, spec_type: str | None
    ) -> None:
        self.name = name
        self.program = program
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self.vocab = vocab
        self.spec_type = spec_type
        version = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60)
        found = re.search(r"version:\s*(.+)", version.stdout + version.stderr)
        self.info: dict[str, Any] = {
            "program": str(program),
            "version": found.group(1).strip() if found else None,
            "spec_type": spec_type,
        }

    def _prompt_bytes(self, ids: list[int]) -> bytes:
        # llama.cpp adds BOS itself where the model asks for one, as our template did.
        body = ids[1:] if self.vocab.add_bos and ids and ids[0] == self.vocab.bos else ids
        return self.vocab.detokenize_bytes(body, True)

    def common_args(self, prompt_file: Path, n_predict: int) -> list[str]:
        t = str(self.threads)
        files = [str(self.program), "-m", self.model_path, "-f", str(prompt_file), "-c", str(self.n_ctx)]
        greedy = ["--temp", "0", "--top-k", "1", "--seed", "0", "--no-escape"]
        return files + ["-n", str(n_predict), "-t", t, "-tb", t] + greedy

    def generate(self, ids: list[int], max_tokens: int) -> dict[str, Any]:
        prompt = self._prompt_bytes(ids)
        with tempfile.TemporaryDirectory(prefix="adadecode-llamacpp-") as tmp:
            prompt_file = Path(tmp) / "prompt.txt"
            # -f drops one trailing newline; the template's last one ("assistant\n") must stay.
            prompt_file.write_bytes(prompt + b"\n")
            if self.spec_type is None:
                return self._completion(ids, prompt_file, Path(tmp) / "session.bin", max_tokens)
            return self._speculative(prompt, prompt_file, max_tokens)

    def _completion(self, ids: list[int], prompt_file: Path, session: Path, max_tokens: int) -> dict[str, Any]:
        cmd = self.common_args(prompt_file, max_tokens)
        cmd += ["-no-cnv", "--no-display-prompt", "--prompt-cache", str(session), "--prompt-cache-all"]
        proc = _run(cmd)
        stats = parse_completion_stderr(proc.stderr.decode("utf-8", "replace"))
        seen = read_session_tokens(session)
        match = seen[: len(ids)] == ids
        generated = seen[len(ids) :] if match else seen[stats["n_prompt_eval"] :]
        finish = "length"
        for i, tok in enumerate(generated):
            if self.vocab.is_eog(tok):
                generated, finish = generated[:i], "stop"
                break
        stats["prompt_ids_match"] = match
        return {
            "tokens": generated[:max_tokens],
            "finish_reason": finish,
            "prefill_seconds": stats.pop("prefill_seconds"),
            "decode_seconds": stats.pop("decode_seconds"),
            "stats": stats,
        }

    def _speculative(self, prompt: bytes, prompt_file: Path, max_tokens: int) -> dict[str, Any]:
        # It stops once it has more than -n tokens: -n max_tokens - 1 gives max_tokens (fewer at an end token).
        assert self.spec_type is not None
        cmd = self.common_args(prompt_file, max_tokens - 1) + ["--spec-type", self.spec_type]
        # It takes the prompt in one batch and refuses one longer than the batch size (2048 by default).
        cmd += ["-b", str(max(2048, self.n_ctx))]
        proc = _run(cmd)
        stats = parse_speculative_stderr(proc.stderr.decode("utf-8", "replace"))
        text = speculative_generated_text(proc.stdout, prompt)
        tokens = list(self.vocab.tokenize(text, False, True))
        stats["tokens_from_text"] = True
        # Kept, because our tokenizer may split the end of the text otherwise than the model did (parity then reports
        # a mismatch in the last tokens that the texts do not have).
        stats["text"] = text.decode("utf-8", "replace")
        return {
            "tokens": tokens[:max_tokens],
            "prefill_seconds": stats.pop("prefill_seconds"),
            "decode_seconds": stats.pop("decode_seconds"),
            "stats": stats,
        }

    def close(self) -> None:
        pass


def start(
    name: str, bin_dir: str | None, model_path: str, threads: int, n_ctx: int, vocab: Any
) -> tuple[BinaryAnchor | None, str]:
    """(the anchor, "") or (None, why it cannot run)."""
    where = f"--llamacpp-bin {bin_dir}"
    folder = Path(bin_dir).expanduser() if bin_dir else None
    if folder is None:
        folder, where = default_bin_dir()
        where = f"{where} {folder}"
    spec_type = SPEC_TYPES.get(name)
    program_name = SPECULATIVE if spec_type else COMPLETION
    program = executable(folder, program_name)
    if program is None:
        return None, (
            f"binary not found: no executable {program_name} in {folder} ({where}); build llama.cpp's programs with "
            "`bash bench/build_llamacpp.sh` or pass --llamacpp-bin DIR"
        )
    if spec_type:
        try:
            helped = subprocess.run([str(program), "--help"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{program} --help failed: {exc}"
        types = supported_spec_types(helped.stdout + helped.stderr)
        if spec_type not in types:
            return None, f"this {program_name} has no --spec-type {spec_type} (it lists: {', '.join(types) or 'none'})"
    try:
        return BinaryAnchor(name, program, model_path, threads, n_ctx, vocab, spec_type), ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot run {program}: {exc}"
