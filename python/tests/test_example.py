"""The README's example (python/examples/demo.py) runs as written."""

import os
import subprocess
import sys

from conftest import ROOT


def test_the_readme_example_runs(pycomd, rust_echo):
    env = dict(os.environ, PYCOM_NAMESERVER=pycomd.endpoint)
    out = subprocess.run([sys.executable, str(ROOT / "python/examples/demo.py")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "echo: {'hello': 'world'}",
        "attachments back: [%d]" % os.path.getsize(ROOT / "python/examples/demo.py"),
        "add: 3",
        "watched: registered /demo/service",
        "received: 10 values, all in [0, 1): True",
        "not found: code 3",
    ], out.stdout
