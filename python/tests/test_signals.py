"""Blocking calls release the GIL, and Ctrl-C interrupts them."""

import os
import sys
import threading
import time

import pytest
import zmq

import pycom_client as pc
from conftest import Process, free_port, wait_until


def in_poll(pid: int) -> bool:
    """The process's main thread sleeps in poll (a ZeroMQ wait)."""
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return "poll" in f.read()
    except OSError:
        return False


def interrupted(script: str, tmp_path) -> str:
    path = tmp_path / "blocked.py"
    path.write_text(script)
    proc = Process([sys.executable, str(path)])
    try:
        assert proc.line() == "waiting"
        wait_until(lambda: in_poll(proc.proc.pid), what="the call to wait in poll")
        started = time.monotonic()
        proc.signal(2)
        proc.proc.wait(timeout=10)
        elapsed = time.monotonic() - started
        err = proc.proc.stderr.read()
        assert elapsed < 3, "Ctrl-C took %.1f s" % elapsed
        return err
    finally:
        proc.stop()


def test_ctrl_c_interrupts_a_subscriber_waiting_for_ever(ctx, tmp_path):
    err = interrupted(
        "import pycom_client as pc\n"
        "sub = pc.Context(%r).subscribe('demo.silence')\n"
        "print('waiting', flush=True)\n"
        "for m in sub: pass\n" % ctx.nameservers[0], tmp_path)
    assert "KeyboardInterrupt" in err, err


def test_ctrl_c_interrupts_a_call_that_waits_for_its_reply(tmp_path):
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        err = interrupted(
            "import pycom_client as pc\n"
            "c = pc.Context('tcp://127.0.0.1:1').connect('tcp://127.0.0.1:%d', 'demo.silent')\n"
            "print('waiting', flush=True)\n"
            "c.invoke('never', timeout=60)\n" % port, tmp_path)
        assert "KeyboardInterrupt" in err, err
    finally:
        silent.close(linger=0)


def test_waiting_calls_let_other_threads_run(ctx):
    sub = ctx.subscribe("demo.silence")
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        assert sub.recv(timeout=0.5) is None
        silent = ctx.connect("tcp://127.0.0.1:%d" % free_port(), "demo.silent")
        before = len(ticks)
        with pytest.raises(pc.Timeout):
            silent.invoke("never", timeout=0.3)
    finally:
        done.set()
        counter.join()
    # About 500 and 300 ticks had the GIL been free; none had it been held.
    assert before > 50 and len(ticks) - before > 30, (before, len(ticks))
