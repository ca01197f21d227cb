"""Ctrl-C, sent as a real SIGINT to a real llmctl process (review 2026-12-06, N3 and N7).

Each test waits on a condition before it signals (the request reached the server; the import
is under way), never on a sleep: the point is when the signal lands.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cli import llmctl_env

# A request that never ends by itself within the test: the default --timeout is 120 s.
NEVER = 120.0
# How long an interrupted llmctl may take to exit: start-up, printing, a loaded machine.
PROMPTLY = 15.0


@contextmanager
def stalled_server() -> Iterator[socket.socket]:
    """A TCP server that accepts connections and never answers (the review's stall.py)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(60)
        yield server


def llmctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=llmctl_env({"COLUMNS": "100"}),
    )


def finish(proc: subprocess.Popen[str], within: float) -> tuple[int, str]:
    """Its exit code and stderr; fails if it is still running `within` seconds from now."""
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running {within:g} s after Ctrl-C: {err[-2000:]}")
    assert time.monotonic() - started < within
    return proc.returncode, err


@pytest.mark.parametrize("extra", [(), ("-n", "5", "--concurrency", "2")])
def test_ctrl_c_stops_test_inference_at_once(extra: tuple[str, ...]) -> None:
    # It waited out --timeout (up to 120 s) with its requests in flight.
    with stalled_server() as server:
        port = server.getsockname()[1]
        proc = llmctl("test-inference", "--url", f"http://127.0.0.1:{port}", *extra)
        connection, _ = server.accept()  # the request is in flight
        with connection:
            proc.send_signal(signal.SIGINT)
            code, err = finish(proc, PROMPTLY)
    assert code == 130, err
    assert "Interrupted." in err and "Traceback" not in err, err


def test_a_second_ctrl_c_never_prints_a_traceback() -> None:
    # It printed "Exception ignored in: <module 'threading'> ... KeyboardInterrupt".
    with stalled_server() as server:
        port = server.getsockname()[1]
        proc = llmctl("test-inference", "--url", f"http://127.0.0.1:{port}", "-n", "3")
        connection, _ = server.accept()
        with connection:
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)
            code, err = finish(proc, PROMPTLY)
    # 130 when the first one's exit won the race, killed by SIGINT (the shell's 130) otherwise.
    assert code in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "Exception ignored" not in err, err


# llmctl's real entry point, with an import hook that says when `typer` (the first heavy
# import) starts loading and then holds the import there until a signal comes.
WHILE_IMPORTING = r"""
import importlib.abc, os, sys, time
class Hold(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            os.write(1, b"importing typer\n")
            time.sleep(60)
        return None
sys.meta_path.insert(0, Hold())
sys.argv = ["llmctl", "render", "--out", sys.argv[1]]
from llmctl.cli.entry import main
main()
"""


def test_ctrl_c_while_llmctl_is_still_importing_exits_130_quietly(tmp_path: Path) -> None:
    # It printed a KeyboardInterrupt traceback through `from llmctl.cli.main import main`.
    proc = subprocess.Popen(
        [sys.executable, "-c", WHILE_IMPORTING, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=llmctl_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"importing typer\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=PROMPTLY)
    assert proc.returncode == 130, err
    assert err == b"", err.decode()
