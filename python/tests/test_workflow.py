"""A workflow hosted by pycomd, called from Python like any component:
a Python step and a Rust step, the run seen through the admin interface."""

import json

import pytest

import pycom_client as pc
from conftest import Pycomd, start_rust_echo


@pc.interface("demo.py.add")
class AddOne:
    @pc.method
    def add_one(self, request, n):
        return {"n": n + 1}


@pytest.fixture
def hosting(tmp_path):
    workflows = tmp_path / "workflows.d"
    workflows.mkdir()
    (workflows / "demo.json").write_text(json.dumps({
        "service": "/demo/workflow/1",
        "tasks": {"task1": [{"interface": "demo.py.add", "method": "add_one"},
                            {"interface": "com.example.echo", "method": "echo"}]}}))
    daemon = Pycomd(config="workflows_dir = %r\n" % str(workflows))
    yield daemon
    daemon.stop()


def test_a_workflow_is_invoked_like_a_component(hosting):
    ctx = pc.Context(hosting.endpoint, timeout=10.0)
    echo = start_rust_echo(hosting)
    server = pc.serve("/demo/py/add", AddOne(), ctx=ctx, block=False)
    try:
        wf = ctx.workflow("/demo/workflow/1")
        assert wf.invoke("task1", {"n": 1}) == {"n": 2}
        assert wf.invoke("task1", {"n": 41}) == {"n": 42}
        with pytest.raises(pc.MethodNotFound, match="its tasks: task1"):
            wf.invoke("task2", {})
        # A step that fails for good fails the run with the step's code.
        with pytest.raises(pc.BadRequest, match="step 'step1'"):
            wf.invoke("task1", {"m": 1})
        with pytest.raises(pc.ServiceNotFound):
            ctx.workflow("/demo/workflow/none")
    finally:
        server.stop()
        echo.stop()
