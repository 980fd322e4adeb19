"""Fixtures: the real pycomd on free ports with a temporary data dir, a
Rust echo service (pycom-client's example), a PyCOM 0.3.2 service, all
stopped when the test ends. Conditions are waited for, never slept on.

Binaries come from the Cargo target directory ($CARGO_TARGET_DIR, else
target/ at the repository's root): build them first (tests/run.sh does;
the echo service is an example: cargo build --release --examples -p
pycom-client). The PyCOM 0.3.2 peer runs under $PYCOM_PYTHON (tests/run.sh
makes that venv), else target/py-peers/bin/python.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import pycom_client as pc

ROOT = Path(__file__).resolve().parents[2]


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release"


def binary(name: str) -> Path:
    path = target_dir() / name
    if not path.is_file():
        pytest.fail("%s is missing: build it first (cargo build --release --workspace "
                    "--examples, or bash tests/run.sh)" % path)
    return path


def peer_python() -> str:
    python = os.environ.get("PYCOM_PYTHON") or str(ROOT / "target/py-peers/bin/python")
    if not Path(python).is_file():
        pytest.fail("no PyCOM 0.3.2 venv at %s: set PYCOM_PYTHON (tests/run.sh makes it)" % python)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=15.0, what="the condition"):
    """Poll ``cond`` every 10 ms until it is true (returns its value)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except pc.PycomError:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


class Pycomd:
    """A pycomd on a free port, with a fresh data dir; killed at the end."""

    def __init__(self, config: str = None):
        self.dir = tempfile.TemporaryDirectory(prefix="pycomd-py-")
        self.port = free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(self.dir.name, "pycomd.log"), "ab")
        args = [str(binary("pycomd")), "--listen", self.endpoint,
                "--data-dir", os.path.join(self.dir.name, "data")]
        if config is not None:
            path = os.path.join(self.dir.name, "pycomd.toml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        # Ports the system picks: parallel runs never share pycomd's defaults.
        env["PYCOMD_PUBSUB__XSUB"] = "tcp://127.0.0.1:*"
        env["PYCOMD_PUBSUB__XPUB"] = "tcp://127.0.0.1:*"
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        probe = pc.Context(self.endpoint, timeout=0.2)

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError("pycomd exited with %s:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                return probe.stat() is not None
            except pc.AccessDenied:
                return True  # access control on: serving all the same

        wait_until(serving, what="pycomd to serve")

    def path(self, name: str) -> str:
        return os.path.join(self.dir.name, name)

    def read_log(self) -> str:
        with open(os.path.join(self.dir.name, "pycomd.log"), errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.dir.cleanup()


class Process:
    """A child process killed at the end; ``line()`` reads its stdout."""

    def __init__(self, args, env=None):
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("%s ended without a line: %s" % (self.proc.args[0], self.proc.stderr.read()))
        return line.strip()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def pycomd():
    daemon = Pycomd()
    yield daemon
    daemon.stop()


@pytest.fixture
def ctx(pycomd):
    return pc.Context(pycomd.endpoint, timeout=5.0)


def start_rust_echo(pycomd) -> Process:
    env = dict(os.environ, PYCOM_NAMESERVER=pycomd.endpoint)
    env.pop("RUST_LOG", None)
    echo = Process([str(binary("examples/echo_service"))], env=env)
    line = echo.line()
    assert line.startswith("echo service on tcp://"), line
    return echo


@pytest.fixture
def rust_echo(pycomd):
    """pycom-client's echo service (Rust): com.example.echo at /com/example/echo."""
    echo = start_rust_echo(pycomd)
    yield echo
    echo.stop()


@pytest.fixture
def pycom032_service(pycomd, ctx):
    """An unmodified PyCOM 0.3.2 service: com.example.calc and com.example.echo."""
    address = "tcp://127.0.0.1:%d" % free_port()
    service = Process([peer_python(), str(ROOT / "tests/interop/pycom_service.py"),
                       pycomd.endpoint, address, "/com/example/pycom032"])
    wait_until(lambda: ctx.locate("com.example.calc"), what="the PyCOM 0.3.2 service to register")
    yield address
    service.stop()


@pytest.fixture
def wait():
    return wait_until


def run_python(code: str, python: str = sys.executable, env=None, timeout=60) -> subprocess.CompletedProcess:
    """Run a Python snippet to its end; its output, checked by the caller."""
    return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)


__all__ = ["Pycomd", "Process", "binary", "free_port", "peer_python", "run_python",
           "start_rust_echo", "wait_until", "ROOT", "signal"]
