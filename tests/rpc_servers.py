"""`adadecode rpc-server` processes on 127.0.0.1 for the tests, and the guarantee that none outlives its test.

Every server is started through `Server`, which never leaves a process behind: a server that does not start in time
is killed before the error is raised, `stop()` kills one that does not stop in time (then fails), `kill()` is the
fixtures' teardown on every path, an atexit hook kills what a crashed run left, and each server dies with the
process that started it (Linux PR_SET_PDEATHSIG), so even a test run killed by a CI timeout leaves none. (The
signal follows the *thread* that started the server: start servers from the main thread, or one that outlives them.)

Why the bootstrap sets SIGINT's disposition: a process started with SIGINT ignored (a background job of a
non-interactive shell, as CI scripts often run pytest) passes that on to its children, and Python then installs no
KeyboardInterrupt handler: such an rpc-server ignores Ctrl-C, as any program started that way should (SIGTERM still
stops it). The tests stop servers as a user at a terminal does, so their servers start with SIGINT at its default
(`sigint="ignore"`: as a background job's).

The servers run without PYTHONUNBUFFERED (set on the development machines and in .ci/run), as on a user's machine:
with it, Python also makes C's stdout unbuffered, which would hide a banner left in stdout's buffer.
"""

from __future__ import annotations

import atexit
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 60.0  # Python + adadecode's import and ggml's device init: ~0.5 s on a quiet machine
STOP_TIMEOUT_S = 30.0

# Runs the CLI as `python -m adadecode` does, after tying the server's life to its parent's (argv[1]: the parent's
# pid, checked after prctl in case the parent died before it) and setting SIGINT's disposition (argv[2]).
_BOOTSTRAP = """\
import os, signal, sys
parent = int(sys.argv.pop(1))
sigint = sys.argv.pop(1)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
signal.signal(signal.SIGINT, signal.SIG_IGN if sigint == "ignore" else signal.default_int_handler)
from adadecode.cli import main
sys.exit(main())
"""

_live: set[Server] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerError(RuntimeError):
    """A test server that did not start or stop in time (it has been killed)."""


class Server:
    """One `adadecode rpc-server` process on 127.0.0.1 (`extra`: more options; `sigint`: "default", as in a
    terminal's foreground, or "ignore", as a background job of a non-interactive shell)."""

    def __init__(self, *extra: str, start_timeout_s: float = START_TIMEOUT_S, sigint: str = "default") -> None:
        if sigint not in ("default", "ignore"):
            raise ValueError(f"sigint must be 'default' or 'ignore', got {sigint!r}")
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.stdout = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(os.getpid()), sigint, "rpc-server", "--port", str(self.port),
             "-t", "1", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )  # fmt: skip
        _live.add(self)
        try:
            deadline = time.monotonic() + start_timeout_s
            self._read_header(deadline)
            self._wait_listening(deadline)
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_header(self, deadline: float) -> None:
        """Reads stdout up to ggml's "transport" line (printed just before it listens), without blocking past the
        deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"transport" not in data:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise ServerError(f"rpc-server {self.endpoint} did not start within the timeout: stdout so far "
                                      f"{data.decode(errors='replace')!r} (killed)")  # fmt: skip
                chunk = os.read(fd, 65536)
                if not chunk:
                    _, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
                    raise ServerError(f"rpc-server {self.endpoint} exited with status {self.proc.returncode} before "
                                      f"it listened: {err.decode(errors='replace')}")  # fmt: skip
                data += chunk
        self.stdout = data.decode(errors="replace")

    def _wait_listening(self, deadline: float) -> None:
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ServerError(f"rpc-server {self.endpoint} does not listen: {e} (killed)") from None
                time.sleep(0.05)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, sig: signal.Signals = signal.SIGINT) -> tuple[int, str]:
        """Ctrl-C (or `sig`), as a user stops it: returns (exit status, stderr). A server still running after
        `timeout_s` is killed and the call fails."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"rpc-server {self.endpoint} did not stop within {timeout_s:g} s of {sig.name} "
                              "(killed)") from None  # fmt: skip
        _live.discard(self)
        return self.proc.returncode, err.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL if still running, then reap it (idempotent): the teardown for every path."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        _live.discard(self)


def kill_all(servers: list[Server]) -> None:
    """Kills every server, even when killing one raises."""
    errors: list[BaseException] = []
    for s in servers:
        try:
            s.kill()
        except BaseException as e:  # noqa: BLE001 - the others are still killed; the first error is re-raised
            errors.append(e)
    if errors:
        raise errors[0]


@atexit.register
def _kill_leftovers() -> None:
    kill_all(list(_live))


def running_rpc_servers(parent: int | None = None) -> list[int]:
    """The pids of live (not zombie) `rpc-server` processes whose parent is `parent` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and b"rpc-server" in cmdline:
            found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
