"""``adadecode chat``: an interactive chat in the terminal, streaming each reply, then its speed and early-exit rate.

Ctrl-D (end of input) or ``/exit`` quits with status 0; Ctrl-C at the prompt quits with status 130; Ctrl-C during
a reply stops that reply and returns to the prompt. ``/reset`` forgets the conversation.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from .api import STATS_KEY, InvalidRequestError, Llama
from .cli_common import (
    EXIT_OK,
    HelpFormatter,
    UsageError,
    add_chat_format_option,
    add_decoding_options,
    add_sampling_options,
    load_engine,
    max_new_tokens,
    model_options,
    validate_run_args,
)

HELP_LINE = "Ctrl-D or /exit quits, Ctrl-C stops a reply, /reset forgets the conversation, /help lists commands."

COMMANDS = {
    "/help": "list these commands (also /?)",
    "/reset": "forget the conversation (the system message stays)",
    "/exit": "quit (also /quit or Ctrl-D)",
}


def help_text() -> str:
    lines = [f"  {name:<8} {what}" for name, what in COMMANDS.items()]
    lines.append("  Ctrl-C   stop the reply being written")
    lines.append("  A line starting with // sends the rest, starting with /, as a message.")
    return "\n".join(lines)


def add_chat_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        parents=parents,
        formatter_class=HelpFormatter,
        help="chat with a model in the terminal",
        description="Interactive chat: type a message, the reply streams as it is generated, then a line on stderr "
        "gives its tokens/s and the share of tokens that left early at an exit head. The conversation is "
        "rendered with the model's chat template. " + HELP_LINE,
        epilog="Example:\n  adadecode chat -m smollm2-135m --heads auto",
    )
    p.add_argument(
        "-m",
        "--model",
        required=True,
        metavar="MODEL",
        help="GGUF file, or a known model name that is fetched on first use (see 'adadecode fetch --list')",
    )
    p.add_argument(
        "--heads",
        metavar="H",
        default=None,
        help="exit heads for adaptive layer-parallel decoding: a sidecar GGUF, a shipped heads name, or 'auto' for "
        "the heads shipped for this model (default: none, standard decoding)",
    )
    p.add_argument("--system", metavar="TEXT", default=None, help="system message that starts the conversation")
    add_chat_format_option(p)
    p.add_argument(
        "-n", "--n-predict", type=int, default=512, metavar="N", help="longest reply in tokens; -1: a full context"
    )
    add_sampling_options(p, temp=0.8)
    add_decoding_options(p)
    p.set_defaults(func=cmd_chat, stop=None)


def stats_line(stats: dict[str, Any], n_tokens: int) -> str:
    """``[23 tokens, 41.2 tok/s, early exits 35% (accepted 92%), prompt 80 tokens, 52 reused]`` for one reply."""
    parts = [f"{n_tokens} tokens", f"{stats.get('tokens_per_second', 0.0):.1f} tok/s"]
    if str(stats.get("mode", "")).startswith("adadecode"):
        early = f"early exits {100 * stats.get('early_exit_fraction', 0.0):.0f}%"
        if stats.get("n_verified"):
            early += f" (accepted {100 * stats.get('accept_rate', 0.0):.0f}%)"
        parts.append(early)
    else:
        parts.append(f"{stats.get('mode', 'standard')} decoding, no early exits")
    if "ngram" in str(stats.get("mode", "")):
        parts.append(f"drafted {100 * stats.get('ngram_fraction', 0.0):.0f}%")
    if stats.get("n_prompt"):
        # From the second turn on only the new messages are prefilled; the earlier ones' KV entries are kept.
        parts.append(f"prompt {stats['n_prompt']} tokens, {stats.get('n_prompt_reused', 0)} reused")
    return "[" + ", ".join(parts) + "]"


def _reply(llm: Any, messages: list[dict[str, str]], gen_args: dict[str, Any], out: TextIO, err: TextIO) -> str | None:
    """Stream one reply to ``out``; returns its text (None when the request was refused)."""
    try:
        chunks = llm.create_chat_completion(messages, stream=True, **gen_args)
    except InvalidRequestError as exc:
        print(f"adadecode: error: {exc} (/reset starts over)", file=err, flush=True)
        return None
    text: list[str] = []
    last: dict[str, Any] = {}
    interrupted = False
    try:
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if piece:
                out.write(piece)
                out.flush()
                text.append(piece)
            last = chunk
    except KeyboardInterrupt:  # stops this reply only; the engine stopped at its next token
        interrupted = True
    out.write("\n")
    out.flush()
    gen = llm.model.last_generation
    stats = last.get(STATS_KEY) or (gen.stats if gen is not None else {})
    n_tokens = last["usage"]["completion_tokens"] if "usage" in last else len(gen.tokens) if gen is not None else 0
    print(("[interrupted] " if interrupted else "") + stats_line(stats, n_tokens), file=err, flush=True)
    return "".join(text)


def cmd_chat(args: argparse.Namespace) -> int:
    validate_run_args(args)
    model_cls, _ = load_engine()
    model = model_cls(args.model, **model_options(args))
    if not model.vocab.chat_template and args.chat_format is None:
        raise UsageError(f"{model.path} has no chat template (tokenizer.chat_template): name a prompt format with "
                         "--chat-format, or use 'adadecode run'")  # fmt: skip
    llm = Llama.from_model(model, chat_format=args.chat_format)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
    exits = list(getattr(model, "exit_layers", []) or [])
    how = f"adadecode decoding, exit heads at layers {exits}" if exits else "standard decoding"
    print(f"adadecode chat with {llm.model_alias} ({how}). {HELP_LINE}", file=sys.stderr, flush=True)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages: list[dict[str, str]] = list(system)
    gen_args = {
        "max_tokens": max_new_tokens(args),
        "temperature": args.temp,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "seed": args.seed,
        "mode": args.mode,
        "gamma": args.gamma,
        "max_pending": args.max_pending,
        "max_draft": args.max_draft,
    }
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:  # Ctrl-D
            if interactive:
                print(file=sys.stderr)
            return EXIT_OK
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return EXIT_OK
        if text == "/reset":
            messages = list(system)
            print("[conversation forgotten]", file=sys.stderr, flush=True)
            continue
        if text in ("/help", "/?"):
            print(help_text(), file=sys.stderr, flush=True)
            continue
        if text.startswith("//"):
            line = text[1:]
        elif text.startswith("/") and " " not in text:  # a mistyped command must not be sent to the model
            print(f"[unknown command {text}; /help lists the commands]", file=sys.stderr, flush=True)
            continue
        messages.append({"role": "user", "content": line})
        reply = _reply(llm, messages, gen_args, sys.stdout, sys.stderr)
        if reply is None:
            messages.pop()
        else:
            messages.append({"role": "assistant", "content": reply})
