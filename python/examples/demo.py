"""The README's Python example, runnable (python/tests/test_example.py runs it).

    target/release/pycomd &
    target/release/examples/echo_service &      # com.example.echo, in Rust
    python python/examples/demo.py              # PYCOM_NAMESERVER, else tcp://127.0.0.1:2012
"""

import random

import pycom_client as pc

ctx = pc.Context()  # pc.Context("tcp://127.0.0.1:2012"), or PYCOM_NAMESERVER
echo = ctx.locate("com.example.echo")
print("echo:", echo.invoke("echo", {"hello": "world"}))
result, files = echo.invoke("echo", {}, attachments=[pc.Binary(__file__)], with_binary=True)
print("attachments back:", [len(f) for f in files])


@pc.interface("demo.interface.name")
class Demo:
    @pc.method()
    def add(self, request, a, b):
        return a + b


# block=True (the default) would serve until Ctrl-C; here: while in the block.
watcher = ctx.watch(interface=r"demo\..*")
with pc.serve("/demo/service", Demo(), ctx=ctx, block=False):
    print("add:", ctx.locate("demo.interface.name").invoke("add", {"a": 1, "b": 2}))
    change = next(iter(watcher))
    print("watched:", change.kind, change.service)

sub = ctx.subscribe("demo.interface.name")
pub = ctx.publisher("demo.interface.name")
for _ in range(10):
    pub.publish(random.random())
values = list(sub.values()[:10])  # the next ten, as they come
print("received:", len(values), "values, all in [0, 1):", all(0 <= v < 1 for v in values))

try:
    ctx.locate("com.example.nothing")
except pc.ServiceNotFound as e:
    print("not found: code", e.code)
