"""``adadecode chat`` used as a person would, in a terminal (a pty driven by pexpect): it answers what the engine
answers for the same conversation, keeps the conversation, reports speed and early exits, and exits cleanly on
Ctrl-D (status 0) and Ctrl-C (status 130), without a traceback."""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")

QUESTIONS = ["What is the capital of France?", "And of Italy?"]
STATS = r"\[(\d+) tokens, [0-9.]+ tok/s, early exits \d+%[^\]]*\]\r\n"


def _spawn(smollm2_path: Path, *flags: str) -> Any:
    # One engine thread: on an oversubscribed CPU ggml's spinning barrier makes 2 threads far slower.
    args = ["-m", "adadecode", "chat", "-m", str(smollm2_path), "--heads", "auto", "-t", "1", "-c", "512", *flags]
    env = dict(os.environ, TERM="dumb")  # no terminal control sequences from readline in the transcript
    # A terminal delivers Ctrl-C to a chat whose SIGINT is at its default. A harness that started the tests in the
    # background of a shell without job control has SIGINT ignored, and an ignored signal stays ignored across exec.
    default_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    child = pexpect.spawn(sys.executable, args, encoding="utf-8", timeout=120, env=env, preexec_fn=default_sigint)
    child.expect("Ctrl-D or /exit quits")
    child.expect("> ")
    return child


def _finish(child: Any) -> tuple[int, str]:
    child.expect(pexpect.EOF)
    tail = child.before
    child.close()
    return child.exitstatus, tail


@pytest.fixture(scope="module")
def reference(engine: Any, smollm2_path: Path) -> Any:
    from adadecode import Llama

    return Llama(smollm2_path, n_ctx=512, n_threads=1)


def test_chat_answers_keeps_the_conversation_and_exits_on_ctrl_d(smollm2_path: Path, reference: Any) -> None:
    child = _spawn(smollm2_path, "--temp", "0", "-n", "16")
    messages: list[dict[str, str]] = []
    transcript = ""
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        ref = reference.create_chat_completion(messages, max_tokens=16, temperature=0)
        answer = ref["choices"][0]["message"]["content"]
        messages.append({"role": "assistant", "content": answer})
        child.sendline(question)
        child.expect(STATS)
        # the pty turns "\n" into "\r\n"
        assert child.before == question + "\r\n" + answer.replace("\n", "\r\n") + "\r\n"
        assert int(child.match.group(1)) == ref["usage"]["completion_tokens"]
        child.expect("> ")
        transcript += child.before
    child.sendeof()
    status, tail = _finish(child)
    assert status == 0
    assert "Traceback" not in transcript + tail


def test_ctrl_c_at_the_prompt_exits_130(smollm2_path: Path) -> None:
    child = _spawn(smollm2_path)
    child.sendintr()
    status, tail = _finish(child)
    assert status == 130
    assert "interrupted" in tail and "Traceback" not in tail


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(smollm2_path: Path) -> None:
    child = _spawn(smollm2_path, "--temp", "0", "-n", "400")
    child.sendline("Count from 1 to 500, separated by commas.")
    child.expect("commas.\r\n")
    child.expect(r"3\. 3")  # the reply ("1. 1\n2. 2\n...") is streaming
    child.sendintr()
    child.expect(r"\[interrupted\] " + STATS)
    assert int(child.match.group(1)) < 400
    child.expect("> ")
    child.sendline("/exit")
    status, tail = _finish(child)
    assert status == 0 and "Traceback" not in tail


def test_chat_format_replaces_the_template(smollm2_path: Path) -> None:
    from adadecode import Llama

    question = "Name a color."
    zephyr = Llama(smollm2_path, n_ctx=512, n_threads=1, chat_format="zephyr")
    ref = zephyr.create_chat_completion([{"role": "user", "content": question}], max_tokens=12, temperature=0)
    child = _spawn(smollm2_path, "--temp", "0", "-n", "12", "--chat-format", "zephyr")
    child.sendline(question)
    child.expect(r"\[(\d+) tokens, ")
    answer = ref["choices"][0]["message"]["content"]
    assert child.before == question + "\r\n" + answer.replace("\n", "\r\n") + "\r\n"
    child.sendeof()
    assert _finish(child)[0] == 0
