"""What the ``adadecode`` subcommands share: exit statuses, the usage error, the help formatter, the flags of
``run``, ``chat`` and ``serve`` and their checks.

The subcommand modules (cli, chat_cli, server) import this one and never each other, so adding a subcommand cannot
create an import cycle.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import adadecode

from ._core import DecodeOptions, Mode
from .chat_formats import CHAT_FORMATS
from .model import MODES

PROG = "adadecode"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """A flag value or input the user gave is not acceptable; reported as one line, exit status 1."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows "(default: X)" for options whose default means something and whose help does not name it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Model / Llama keyword arguments that run, chat and serve take from their shared flags."""
    options: dict[str, Any] = {
        "n_ctx": args.ctx_size,
        "n_threads": args.threads,
        "heads": args.heads,
        "n_gpu_layers": args.n_gpu_layers,
        "device": args.device,
    }
    if args.rpc is not None:
        options["rpc_servers"] = args.rpc
    if args.tensor_split is not None:
        options["tensor_split"] = args.tensor_split
    return options


def add_chat_format_option(p: argparse.ArgumentParser) -> None:
    """--chat-format, llama-cpp-python's chat_format (shared by chat and serve)."""
    p.add_argument(
        "--chat-format",
        choices=sorted(CHAT_FORMATS),
        default=None,
        metavar="NAME",
        help="prompt format in place of the GGUF's chat template, its end of turn also ending a reply: "
        f"{', '.join(sorted(CHAT_FORMATS))} (default: the GGUF's template)",
    )


def add_device_options(p: argparse.ArgumentParser) -> None:
    """-ngl and --device, as in llama.cpp (shared by run, chat and serve)."""
    p.add_argument(
        "-ngl",
        "--n-gpu-layers",
        type=int,
        default=0,
        metavar="N",
        help="0: compute on the CPU (default); any other value puts the whole model on the first GPU (no partial "
        "offload); without a GPU in this build, a warning and the CPU",
    )
    p.add_argument(
        "--device",
        default=None,
        metavar="NAME",
        help="compute on this ggml device (`adadecode devices` lists them; CPU runs ggml's kernels on a copy)",
    )
    p.add_argument(
        "--rpc",
        default=None,
        metavar="HOST:PORT[,...]",
        help="compute on the devices of `adadecode rpc-server` processes: one server holds the whole model, "
        "several (or --tensor-split) split its layers across the local CPU and the servers; see docs/rpc.md",
    )
    add_tensor_split_option(p)


def add_tensor_split_option(p: argparse.ArgumentParser) -> None:
    """--tensor-split, as in llama.cpp (run, chat, serve, bench)."""
    p.add_argument(
        "-ts",
        "--tensor-split",
        default=None,
        metavar="A,B,...",
        help="with --rpc: the share of layers for each device, the local CPU first, then each server's "
        "(default: in proportion to their free memory); e.g. 1,2,2",
    )


def add_sampling_options(p: argparse.ArgumentParser, *, temp: float) -> None:
    """Threads, context and the sampling flags (shared by run and chat, which differ in the default temperature)."""
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads (default: one per core this process may use, and fewer while other programs keep some of "
        "them busy: a thread sharing a core with another program holds the others up at every step). N: always N",
    )
    p.add_argument("-c", "--ctx-size", type=int, default=4096, metavar="N", help="context size in tokens")
    add_device_options(p)
    p.add_argument("--temp", type=float, default=temp, metavar="T", help="sampling temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=40, metavar="K", help="sample from the K most likely tokens; 0 = off")
    p.add_argument("--top-p", type=float, default=0.95, metavar="P", help="nucleus sampling threshold; 1 = off")
    p.add_argument(
        "--min-p", type=float, default=0.05, metavar="P", help="drop tokens below P times the top probability; 0 = off"
    )
    p.add_argument(
        "-s", "--seed", type=int, default=None, metavar="S", help="random seed for sampling (default: random)"
    )


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """The flags that choose the decoding method and tune it (shared by run and chat)."""
    engine = DecodeOptions()  # the defaults shown are the engine's own
    p.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="decoding method: standard, adadecode (exit heads), ngram (prompt-lookup drafts) or both "
        "(default: adadecode when exit heads are available, else standard); greedy output (--temp 0) is "
        "identical in every mode; with sampling every mode draws from the same distribution, but one --seed "
        "gives different samples in different modes",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        metavar="G",
        help="adadecode: confidence in [0, 1] an exit head needs to emit a token early "
        f"(default: engine's, {engine.gamma})",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=None,
        metavar="K",
        help="adadecode: at most K tokens with deferred upper layers at once "
        "(default: 8, or 5 with prompt-lookup drafts)",
    )
    p.add_argument(
        "--max-draft",
        type=int,
        default=None,
        metavar="D",
        help="ngram: at most D tokens per prompt-lookup draft; fewer are proposed when measured acceptance "
        f"does not pay for them (default: engine's, {engine.ngram_options.max_draft})",
    )


def load_engine() -> tuple[Callable[..., Any], type[BaseException] | None]:
    """The engine's ``Model`` class and its error type."""
    model = getattr(adadecode, "Model", None)
    if model is None:
        raise UsageError("this installation of adadecode has no engine (adadecode.Model is missing)")
    return model, getattr(adadecode, "Error", None)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def max_new_tokens(args: argparse.Namespace) -> int:
    """-n as llama.cpp reads it: -1 (and -2, "until the context is full") generate until the end of generation or a
    full context."""
    return args.ctx_size if args.n_predict < 0 else args.n_predict


def validate_run_args(args: argparse.Namespace) -> None:
    """Reject flag values the engine would refuse or misread, with a message naming the flag."""
    _check(args.n_predict >= 1 or args.n_predict in (-1, -2),
           f"-n/--n-predict must be at least 1, or -1 (until the end of generation or a full context), got "
           f"{args.n_predict}")  # fmt: skip
    _check(args.threads is None or args.threads >= 1, f"-t/--threads must be at least 1, got {args.threads}")
    _check(args.ctx_size >= 1, f"-c/--ctx-size must be at least 1, got {args.ctx_size}")
    _check(math.isfinite(args.temp) and args.temp >= 0, f"--temp must be a number >= 0, got {args.temp}")
    _check(args.top_k >= 0, f"--top-k must be >= 0, got {args.top_k}")
    _check(0 <= args.top_p <= 1, f"--top-p must be in [0, 1], got {args.top_p}")
    _check(0 <= args.min_p <= 1, f"--min-p must be in [0, 1], got {args.min_p}")
    _check(args.seed is None or 0 <= args.seed < 2**64, f"--seed must be in [0, 2^64), got {args.seed}")
    if args.gamma is not None:
        _check(0 <= args.gamma <= 1, f"--gamma must be in [0, 1], got {args.gamma}")
    if args.max_pending is not None:
        _check(args.max_pending >= 1, f"--max-pending must be at least 1, got {args.max_pending}")
    if args.max_draft is not None:
        _check(args.max_draft >= 1, f"--max-draft must be at least 1, got {args.max_draft}")
    mode = None if args.mode is None else Mode.parse(args.mode)  # argparse's choices admit only the engine's names
    if mode is not None and mode.uses_heads:
        _check(args.heads is not None, f"--mode {args.mode} needs --heads")
    if mode is not None and not mode.uses_heads:
        _check(args.gamma is None, "--gamma applies only to the adadecode modes")
        _check(args.max_pending is None, "--max-pending applies only to the adadecode modes")
    if mode is None or not mode.uses_ngram:
        _check(args.max_draft is None, "--max-draft applies only to the ngram modes")
    if args.stop is not None:
        _check(all(args.stop), "--stop strings must not be empty")
