"""ggml's RPC backend: `adadecode rpc-server` processes on 127.0.0.1 and a model computing on them (docs/rpc.md).

Phase 1: the whole model on one remote device (the split across several devices: test_rpc_split.py). Its logits
are bitwise those of the same model on the local CPU device (`device="CPU"`: ggml's kernels on both sides), and its
tokens those of a local run in every decoding mode. Faults (no server, a server speaking another protocol, a server
killed mid-generation) are clear errors in bounded time, and the process stays usable.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prompts import PARITY_PROMPTS
from rpc_servers import Server, ServerError, free_port, is_running, running_rpc_servers

MODES = ["standard", "adadecode", "ngram", "adadecode+ngram"]


def _rpc_available() -> bool:
    try:
        from adadecode import _core
    except ImportError:
        return False
    return bool(_core.rpc_available())


pytestmark = [
    pytest.mark.skipif(
        not _rpc_available(),
        reason="this build has no RPC backend (CMake option ADADECODE_RPC, on by default; it needs the ggml source, "
        "downloaded from PyPI at build time or given with ADADECODE_RPC_SOURCE)",
    ),
    # Every rpc-server a test (or a module fixture) starts is gone when it ends, pass or fail (conftest.py).
    pytest.mark.usefixtures("no_rpc_server_outlives_the_module", "no_rpc_server_outlives_its_test"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
        rc, err = s.stop()
        assert rc == 0 and "rpc-server: stopped" in err, (rc, err)
    finally:
        s.kill()


@pytest.fixture(scope="module")
def remote(engine: Any, smollm2_path: Path, server: Server) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=2, rpc_servers=server.endpoint, heads="auto")


def test_rpc_server_lists_its_device(server: Server) -> None:
    assert "Starting RPC server v" in server.stdout and "CPU" in server.stdout


def test_remote_device_is_used(remote: Any) -> None:
    assert remote.device.startswith("RPC")
    from adadecode import list_devices

    assert {"name": remote.device, "kind": "rpc"}.items() <= next(
        d for d in list_devices() if d["name"] == remote.device
    ).items()
    from adadecode import _core

    # A remote device is never taken for "the GPU" (-ngl, device="gpu"), though ggml types it as one.
    assert _core.has_gpu() == any(d["kind"] in ("gpu", "igpu") for d in list_devices())


def test_remote_logits_equal_the_local_cpu_device_bitwise(engine: Any, smollm2_path: Path, remote: Any) -> None:
    """Both sides run ggml's CPU kernels: the remote logits are the local CPU device's, bit for bit."""
    local = engine(smollm2_path, n_ctx=512, n_threads=2, device="CPU")
    for prompt in PARITY_PROMPTS[:3]:
        ids = remote.tokenize(prompt)
        a, b = remote.logits(ids), local.logits(ids)
        assert a.shape == b.shape and np.array_equal(a, b), (prompt, float(np.abs(a - b).max()))


@pytest.fixture(scope="module")
def local_cpu_device(engine: Any, smollm2_path: Path) -> Any:
    return engine(smollm2_path, n_ctx=512, n_threads=2, device="CPU", heads="auto")


@pytest.mark.parametrize("mode", MODES)
def test_remote_tokens_equal_local_in_every_mode(remote: Any, local_cpu_device: Any, mode: str) -> None:
    """Greedy tokens on the remote device equal the local CPU device's standard decoding, in every mode. (Against
    the local default path, our own matmul kernels, logits differ by rounding, and so may a token now and then.)"""
    for prompt in PARITY_PROMPTS[:2]:
        want = local_cpu_device.generate(prompt, mode="standard", max_tokens=32).tokens
        got = remote.generate(prompt, mode=mode, max_tokens=32)
        assert got.tokens == want, (prompt, mode)


def test_cli_run_with_rpc(smollm2_path: Path, start_rpc_server: Callable[..., Server]) -> None:
    server = start_rpc_server()  # its own: the module's server serves the `remote` model (one client at a time)
    args = ["-m", str(smollm2_path), "-p", "The capital of France is", "-n", "8", "--temp", "0", "-c", "256"]
    local = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", *args, "--device", "CPU"], capture_output=True, text=True
    )
    remote = subprocess.run(
        [sys.executable, "-m", "adadecode", "run", *args, "--rpc", server.endpoint], capture_output=True, text=True
    )
    assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
    assert server.stop()[0] == 0
    assert remote.stdout == local.stdout and remote.stdout.strip()


def test_a_local_device_with_rpc_servers_is_refused(
    engine: Any, smollm2_path: Path, start_rpc_server: Callable[..., Server]
) -> None:
    s = start_rpc_server()
    with pytest.raises(ValueError, match="is not a device of rpc_servers"):
        engine(smollm2_path, n_ctx=64, rpc_servers=s.endpoint, device="CPU")
    assert s.stop()[0] == 0


def test_busy_server_is_an_error_within_the_timeout(server: Server, remote: Any) -> None:
    """An rpc-server serves one client at a time: a second one (another process) gets a clear error in bounded time,
    not a wait without end."""
    script = f"from adadecode import _core\n_core.rpc_add_server({server.endpoint!r}, 1.0)"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "did not answer the handshake within 1 s (it serves one client at a time" in out.stderr, out.stderr
    assert time.monotonic() - start < 30  # mostly the child's import time


# --- faults -------------------------------------------------------------------------------------------------------


def test_unreachable_server_is_a_clear_error_at_once(engine: Any, smollm2_path: Path) -> None:
    from adadecode import Error

    start = time.monotonic()
    port = free_port()  # nothing listens there
    with pytest.raises(Error, match=rf"cannot reach rpc-server 127\.0\.0\.1:{port}: Connection refused"):
        engine(smollm2_path, n_ctx=64, rpc_servers=f"127.0.0.1:{port}")
    assert time.monotonic() - start < 5


def test_silent_host_is_an_error_within_the_timeout() -> None:
    """A server that accepts the connection but never answers (or a host that drops packets) does not hang."""
    from adadecode import Error, _core

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        start = time.monotonic()
        with pytest.raises(Error, match="did not answer the handshake within"):
            _core.rpc_add_server(f"127.0.0.1:{listener.getsockname()[1]}", 1.0)
        assert time.monotonic() - start < 5


def _fake_server(reply: bytes | None) -> tuple[socket.socket, threading.Thread]:
    """Answers one HELLO with `reply` (None: closes the connection instead)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1 + 8 + 24)
            if reply is not None:
                conn.sendall(reply)
                time.sleep(0.5)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return listener, t


def test_protocol_version_mismatch_is_a_clear_error() -> None:
    from adadecode import Error, _core

    hello = (28).to_bytes(8, "little") + bytes([4, 0, 0, 0]) + bytes(24)  # a protocol 4.0.0 server
    listener, t = _fake_server(hello)
    want = r"speaks RPC protocol 4\.0\.0, this build " + _core.rpc_protocol_version()
    with listener, pytest.raises(Error, match=want):
        _core.rpc_add_server(f"127.0.0.1:{listener.getsockname()[1]}", 5.0)
    t.join(5)


def test_server_closing_the_handshake_is_a_clear_error() -> None:
    """An older server drops a HELLO of another size: the error says the protocol likely differs."""
    from adadecode import Error, _core

    listener, t = _fake_server(None)
    with listener, pytest.raises(Error, match="closed the connection during the handshake"):
        _core.rpc_add_server(f"127.0.0.1:{listener.getsockname()[1]}", 5.0)
    t.join(5)


def test_bad_endpoints_are_refused() -> None:
    from adadecode import Error, _core

    for bad in ["localhost", "127.0.0.1:", ":50052", "127.0.0.1:99999", "127.0.0.1:x"]:
        with pytest.raises(Error, match="bad"):
            _core.rpc_add_server(bad, 1.0)


def run_killing_a_server(smollm2_path: Path, victim: Server, model_args: str, generate_args: str = "") -> str:
    """In a child process (so that a crash fails the test, not pytest): load SmolLM2 with `model_args`, SIGKILL
    `victim` on the third token, expect a clear Error, then run a local model in the same process. Returns stdout
    (with the model's split after "SPLIT") once the error and the local run are checked."""
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from adadecode import Error, Model
        m = Model({str(smollm2_path)!r}, n_ctx=512, n_threads=1, {model_args})
        print("SPLIT", m.split)
        calls = []

        def kill_on_third_token(ids, scores):  # runs between passes, on the generating thread
            calls.append(time.monotonic())
            if len(calls) == 3:
                os.kill({victim.proc.pid}, signal.SIGKILL)

        try:
            m.generate("The capital of France is", max_tokens=60, logits_processor=kill_on_third_token{generate_args})
            print("NO ERROR after", len(calls), "tokens")
        except Error as e:
            print("ERROR after", len(calls), "tokens in", round(time.monotonic() - calls[2], 2), "s:", e)
        del m
        local = Model({str(smollm2_path)!r}, n_ctx=64, n_threads=1)
        print("LOCAL", local.generate("Hello", max_tokens=2, mode="standard").tokens)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERROR after 3 tokens" in out.stdout and "RPC failure" in out.stdout, out.stdout
    assert "LOCAL [" in out.stdout
    return out.stdout


def test_server_killed_mid_generation(smollm2_path: Path, start_rpc_server: Callable[..., Server]) -> None:
    """SIGKILL the server while tokens stream: a clear Error, no hang, no crash; the model can be dropped and the
    same process then runs a local model."""
    victim = start_rpc_server()
    run_killing_a_server(smollm2_path, victim, f"rpc_servers={victim.endpoint!r}")


def test_model_that_does_not_fit_is_a_clear_error(
    engine: Any, smollm2_path: Path, start_rpc_server: Callable[..., Server]
) -> None:
    """A server reporting 50 MiB (--mem) refuses SmolLM2's ~92 MiB of weights before any is sent; then the process
    loads the model locally."""
    from adadecode import Error

    small = start_rpc_server("--mem", "50")
    with pytest.raises(Error, match=r"the weights need \d+ MiB but RPC\d+ \(127\.0\.0\.1:\d+\) has 50 MiB free"):
        engine(smollm2_path, n_ctx=64, rpc_servers=small.endpoint)
    assert small.stop()[0] == 0
    assert engine(smollm2_path, n_ctx=64, n_threads=1).generate("Hi", max_tokens=1, mode="standard").tokens


# --- the server command --------------------------------------------------------------------------------------------


def test_non_loopback_address_warns_and_a_bind_failure_is_an_error() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this host: the warning is printed, then binding fails cleanly.
    out = subprocess.run(
        [sys.executable, "-m", "adadecode", "rpc-server", "--host", "192.0.2.1", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "WARNING" in out.stderr and "no authentication" in out.stderr
    assert out.returncode != 0 and "could not start on 192.0.2.1" in out.stderr


def test_mem_is_reported_to_clients(start_rpc_server: Callable[..., Server]) -> None:
    s = start_rpc_server("--mem", "123")
    assert "(123 MiB, 123 MiB free)" in s.stdout
    assert s.stop()[0] == 0


def test_bad_server_options_are_usage_errors() -> None:
    for bad in (["--port", "0"], ["--threads", "-1"], ["--mem", "-5"]):
        out = subprocess.run(
            [sys.executable, "-m", "adadecode", "rpc-server", *bad], capture_output=True, text=True, timeout=60
        )
        assert out.returncode != 0 and bad[0] in out.stderr, (bad, out.stderr)


# --- no server outlives its test (rpc_servers.py) -----------------------------------------------------------------

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through Linux's /proc")


@needs_proc
def test_a_server_that_does_not_start_in_time_is_killed() -> None:
    before = set(running_rpc_servers())
    with pytest.raises(ServerError, match=r"rpc-server 127\.0\.0\.1:\d+ did not start within the timeout"):
        Server(start_timeout_s=0.001)  # Python alone takes longer to start
    assert set(running_rpc_servers()) <= before


@needs_proc
def test_a_server_that_ignores_sigint_is_killed_by_stop() -> None:
    """What a CI run of pytest as a background job of a non-interactive shell does to every server: SIGINT ignored.
    stop() times out, kills it and says so; nothing is left running."""
    s = Server(sigint="ignore")
    with pytest.raises(ServerError, match=rf"rpc-server {s.endpoint} did not stop within 2 s of SIGINT \(killed\)"):
        s.stop(timeout_s=2)
    assert s.proc.returncode == -signal.SIGKILL and not is_running(s.pid)
    assert s.pid not in running_rpc_servers()


def test_sigterm_stops_a_server_that_ignores_sigint(start_rpc_server: Callable[..., Server]) -> None:
    """A background job (SIGINT ignored, as for any program started so) still stops cleanly on SIGTERM."""
    s = start_rpc_server(sigint="ignore")
    rc, err = s.stop(sig=signal.SIGTERM)
    assert rc == 0 and "rpc-server: stopped" in err, (rc, err)


@needs_proc
def test_servers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    """A test run killed outright (a CI timeout: no teardown, no atexit) takes its servers with it."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from rpc_servers import Server
        servers = [Server(), Server()]
        print(" ".join(str(s.pid) for s in servers), flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert child.stdout is not None
        pids += [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2 and all(is_running(p) for p in pids), pids
        child.kill()
        child.wait()
        deadline = time.monotonic() + 30
        while any(is_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(is_running(p) for p in pids), pids
    finally:
        child.kill()
        child.communicate()
        for pid in filter(is_running, pids):  # orphans of a failed check: not this process's children
            os.kill(pid, signal.SIGKILL)


@needs_proc
def test_banner_arrives_without_pythonunbuffered(start_rpc_server: Callable[..., Server]) -> None:
    """Without PYTHONUNBUFFERED (a user's shell) C's stdout is block-buffered on a pipe: the server line-buffers it,
    so a supervisor reads its banner before any client connects (rpc_servers.Server waits for it first)."""
    s = start_rpc_server()
    env = Path(f"/proc/{s.pid}/environ").read_bytes().split(b"\0")
    assert not any(e.startswith(b"PYTHONUNBUFFERED=") for e in env)
    assert "Starting RPC server v" in s.stdout and "transport" in s.stdout
