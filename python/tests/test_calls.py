"""Calls both ways: Python to a Rust service and to a PyCOM 0.3.2 service;
a Rust client and a PyCOM 0.3.2 client to a Python service. Attachments,
sessions, errors, recovery after a service restart."""

import os
import subprocess

import pytest

import pycom_client as pc
from conftest import Process, binary, free_port, peer_python, start_rust_echo, wait_until


def test_invoke_the_rust_echo_service(ctx, rust_echo):
    echo = ctx.locate("com.example.echo")
    payload = {"hello": "world", "n": [1, 2.5, None, True], "deep": {"é": "ü"}, "big": 2**63 + 1}
    assert echo.invoke("echo", payload) == payload
    assert echo.invoke("echo") is None
    assert echo.invoke("echo", ("a", 1)) == ["a", 1]
    assert echo.interface == "com.example.echo"
    assert echo.address.startswith("tcp://127.0.0.1:")


def test_attachments_go_and_come_back(ctx, rust_echo, tmp_path):
    echo = ctx.locate("com.example.echo")
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"127.0.0.1 localhost\n")
    large = os.urandom(1024 * 1024 + 17)
    result, files = echo.invoke("echo", {}, attachments=[pc.Binary(str(hosts)), pc.Binary(large), b"raw"],
                                with_binary=True)
    assert result == {}
    assert [len(f) for f in files] == [20, len(large), 3]
    assert files[0].read() == b"127.0.0.1 localhost\n" and bytes(files[2]) == b"raw"
    assert files[0].path is None
    # Above 1 MiB an attachment is kept in a temporary file.
    assert files[1].path is not None and files[1].read() == large
    saved = files[1].save(str(tmp_path / "copy"))
    assert open(saved, "rb").read() == large
    with pytest.raises(OSError, match="no-such-file"):
        pc.Binary(str(tmp_path / "no-such-file"))


def test_invoke_a_pycom_032_service(ctx, pycom032_service):
    calc = ctx.locate("com.example.calc")
    assert calc.invoke("add", {"a": 2, "b": 40}) == 42
    with pytest.raises(pc.BadRequest, match="fail was asked to fail") as err:
        calc.invoke("fail", {})
    assert err.value.code == 4 and isinstance(err.value, pc.PycomError)
    with pytest.raises(pc.MethodNotFound) as err:
        calc.invoke("nope", {})
    assert err.value.code == 2
    echo = ctx.locate("com.example.echo", "/com/example/pycom032")
    assert echo.invoke("echo", {"x": [1, "two"]}) == {"x": [1, "two"]}


def test_errors_are_exceptions_per_result_code(ctx, pycomd):
    with pytest.raises(pc.ServiceNotFound) as err:
        ctx.locate("com.example.nothing")
    assert err.value.code == 3 and "com.example.nothing" in str(err.value)
    assert [c.code for c in (pc.RemoteError, pc.MethodNotFound, pc.ServiceNotFound, pc.BadRequest,
                             pc.AccessDenied, pc.SessionExpired, pc.Unavailable)] == list(range(1, 8))
    assert pc.ServiceNotAvailable is pc.Unavailable
    dead = pc.Context("tcp://127.0.0.1:%d" % free_port(), timeout=0.2)
    with pytest.raises(pc.Timeout) as err:
        dead.locate("x")
    assert isinstance(err.value, TimeoutError) and err.value.code is None
    assert err.value.endpoint.startswith("tcp://127.0.0.1:")
    with pytest.raises(pc.EndpointError):
        pc.Context("nonsense")
    echo_less = ctx.connect(pycomd.endpoint, "org.pycom.nameserver")
    with pytest.raises(TypeError, match="set, which is not JSON"):
        echo_less.invoke("stat", {"a": {1, 2}})
    with pytest.raises(TypeError, match="dict key of type int"):
        echo_less.invoke("stat", {1: 2})
    with pytest.raises(ValueError, match="NaN, which JSON cannot carry"):
        echo_less.invoke("stat", float("nan"))


@pc.interface("demo.interface.name")
class Demo:
    """A demo interface."""

    @pc.method()
    def add(self, request, a, b):
        """Add a and b."""
        return a + b

    @pc.method("count")
    def count_calls(self, request):
        request.session["n"] = request.session.get("n", 0) + 1
        return request.session["n"]

    @pc.method(results=("name", "size"))
    def describe(self, request, prefix="file"):
        data = b"".join(a.read() for a in request.attachments)
        return "%s-%d" % (prefix, len(data)), len(data)

    @pc.method(attachments=(None, "blob"), results=("orig", "blob"))
    def encode(self, request, text):
        return text, text.encode("utf-8")

    @pc.method
    def fail(self, request, how="bad"):
        if how == "bad":
            raise pc.BadRequest("fail: how=bad was asked for")
        if how == "denied":
            raise pc.AccessDenied("nobody may fail")
        raise RuntimeError("something broke")

    @pc.method
    def echo(self, request, **kwargs):
        return pc.Reply(kwargs, [b"first", pc.Binary(b"second")])


@pytest.fixture
def demo(ctx):
    server = pc.serve("/demo/service", Demo(), ctx=ctx, block=False)
    yield server
    server.stop()


def test_a_python_service_answers_python(ctx, demo):
    d = ctx.locate("demo.interface.name")
    assert d.invoke("add", {"a": 1, "b": 2}) == 3
    assert d.invoke("add", {"a": "x", "b": "y"}) == "xy"
    with pytest.raises(pc.BadRequest, match="argument 'b' is required"):
        d.invoke("add", {"a": 1})
    with pytest.raises(pc.BadRequest, match="takes its arguments as an object"):
        d.invoke("add", [1, 2])
    assert d.invoke("describe", {}, attachments=[b"abc", b"de"]) == {"name": "file-5", "size": 5}
    assert d.invoke("describe", {"prefix": "p"}) == {"name": "p-0", "size": 0}
    result, files = d.invoke("encode", {"text": "héllo"}, with_binary=True)
    assert result == {"orig": "héllo"} and [f.read() for f in files] == ["héllo".encode()]
    result, files = d.invoke("echo", {"k": 1}, with_binary=True)
    assert result == {"k": 1} and [f.read() for f in files] == [b"first", b"second"]
    with pytest.raises(pc.BadRequest, match="how=bad"):
        d.invoke("fail", {})
    with pytest.raises(pc.AccessDenied, match="access denied: nobody may fail"):
        d.invoke("fail", {"how": "denied"})
    with pytest.raises(pc.RemoteError, match="RuntimeError: something broke") as err:
        d.invoke("fail", {"how": "other"})
    assert err.value.code == 1
    intro = d.invoke("introspect")
    assert intro["name"] == "demo.interface.name" and intro["docstring"] == "A demo interface."
    add = intro["methods"]["add"]
    assert add["required_arguments"] == ["a", "b"] and add["docstring"] == "Add a and b."
    assert intro["methods"]["describe"]["optional_arguments"] == ["prefix"]
    assert intro["methods"]["encode"]["attachments"] == {"incoming": None, "outgoing": "blob"}


def test_sessions_are_per_component(ctx, demo):
    one = ctx.locate("demo.interface.name")
    assert [one.invoke("count") for _ in range(3)] == [1, 2, 3]
    assert one.session_id
    two = ctx.locate("demo.interface.name")
    assert two.invoke("count") == 1 and two.session_id != one.session_id
    assert one.invoke("count") == 4


def test_a_rust_client_calls_a_python_service(pycomd, demo):
    out = subprocess.run([str(binary("pycomctl")), "--nameserver", pycomd.endpoint, "call",
                          "demo.interface.name", "add", '{"a": 20, "b": 22}'],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_a_pycom_032_client_calls_a_python_service(pycomd, demo):
    code = (
        "import pycom\n"
        "pycom.configure(nameserver=%r)\n"
        "d = pycom.locate('demo.interface.name')\n"
        "print(d.invoke('add', {'a': 1, 'b': 41}))\n"
        "try:\n"
        "    d.invoke('add', {'a': 1})\n"
        # 0.3.2 raises RemoteError for every code it does not map.
        "except pycom.RemoteError as e:\n"
        "    print('refused:', e)\n" % pycomd.endpoint
    )
    out = subprocess.run([peer_python(), "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "42", out.stdout
    assert lines[1].startswith("refused:") and "'b' is required" in lines[1], out.stdout


def test_a_call_follows_its_service_after_a_restart(pycomd, ctx):
    echo_service = start_rust_echo(pycomd)
    ctx.timeout = 1.0
    echo = ctx.locate("com.example.echo")
    assert echo.invoke("echo", {"before": 1}) == {"before": 1}
    first = echo.address
    # Restarted: the old process unregisters on its way out (a killed one's
    # record would hold the name for its 10 s lease), the new one serves
    # on another port.
    echo_service.signal(2)
    assert echo_service.proc.wait(timeout=10) == 0
    echo_service.stop()
    echo_service = start_rust_echo(pycomd)
    try:
        # The first try times out at the dead address; the retry asks the
        # nameserver, which has the new one.
        assert echo.invoke("echo", {"after": 2}) == {"after": 2}
        assert echo.address != first
    finally:
        echo_service.stop()


def test_serve_blocks_until_ctrl_c_and_unregisters(pycomd, ctx, tmp_path):
    script = tmp_path / "svc.py"
    script.write_text(
        "import pycom_client as pc\n"
        "@pc.interface('demo.blocking')\n"
        "class B:\n"
        "    @pc.method\n"
        "    def ping(self, request): return 'pong'\n"
        "pc.serve('/demo/blocking', B(), ctx=pc.Context(%r))\n"
        "print('unregistered', flush=True)\n" % pycomd.endpoint)
    svc = Process([os.sys.executable, str(script)])
    try:
        b = wait_until(lambda: ctx.locate("demo.blocking"), what="the Python service to register")
        assert b.invoke("ping") == "pong"
        svc.signal(2)
        assert svc.line() == "unregistered"
        wait_until(lambda: _gone(ctx, "demo.blocking"), what="its record to go")
    finally:
        svc.stop()


def _gone(ctx, interface):
    try:
        ctx.locate(interface)
    except pc.ServiceNotFound:
        return True
    return False
