"""Pub-sub from Python through pycomd's forwarder: values, patterns, last
values, attachments, gaps; and the registry watcher."""

import json
import time
import uuid

import pytest
import zmq

import pycom_client as pc
from conftest import start_rust_echo, wait_until


def test_published_values_arrive_in_order(ctx):
    sub = ctx.subscribe("demo.interface.name")
    pub = ctx.publisher("demo.interface.name")
    assert pub.topic == "demo.interface.name" and len(pub.src) == 32
    assert [pub.publish(i * 0.5) for i in range(1, 21)] == list(range(1, 21))
    # The seed's client[:10]: the next ten values, as they come.
    assert list(sub.values()[:10]) == [i * 0.5 for i in range(1, 11)]
    message = sub.recv(timeout=5)
    assert (message.topic, message.seq, message.value, message.replay) == ("demo.interface.name", 11, 5.5, False)
    assert message.src == pub.src and message.ts > 0
    rest = [m.value for m in [sub.recv(timeout=5) for _ in range(9)]]
    assert rest == [i * 0.5 for i in range(12, 21)]
    assert sub.recv(timeout=0.05) is None
    assert sub.stats["received"] == 20 and sub.stats["gaps"] == 0


def test_patterns_last_values_and_attachments(ctx):
    pub = ctx.publisher("demo.a.x")
    pub.publish({"first": True})
    pub.publish({"last": True}, topic="demo.b.x")
    sub = ctx.subscribe("demo.*.x", "demo.c.>", start="last")
    replays = sorted((m.topic, json.dumps(m.value)) for m in (sub.recv(timeout=5), sub.recv(timeout=5)))
    assert replays == [("demo.a.x", '{"first": true}'), ("demo.b.x", '{"last": true}')]
    pub.publish([1, 2], topic="demo.c.d.e", attachments=[b"blob", pc.Binary(b"more")])
    pub.publish("not for us", topic="demo.d")
    m = next(iter(sub))
    assert m.topic == "demo.c.d.e" and m.value == [1, 2]
    assert [a.read() for a in m.attachments] == [b"blob", b"more"]
    assert sub.recv(timeout=0.1) is None
    with pytest.raises(ValueError, match="start must be"):
        ctx.subscribe("a", start="first")


def forwarder(ctx):
    record = [s for s in ctx.list_services() if s["service"] == "/org/pycom/pubsub"][0]
    return record["metadata"]["xsub"]


def test_gaps_are_seen_and_raised_on_request(ctx):
    """A raw publisher that skips sequence numbers, as a forwarder that
    dropped messages would look to a subscriber."""
    sub = ctx.subscribe("demo.gaps", gaps="error")
    raw = zmq.Context.instance().socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 1000)
    raw.connect(forwarder(ctx))
    assert raw.poll(10000), "the forwarder never subscribed"
    raw.recv()
    src = uuid.uuid4().hex
    for seq in (1, 2, 5, 6):
        header = {"src": src, "seq": seq, "ts": int(time.time() * 1000)}
        raw.send_multipart([b"demo.gaps", json.dumps(header).encode(), json.dumps(seq).encode()])
    assert sub.recv(timeout=5).value == 1
    assert sub.recv(timeout=5).value == 2
    with pytest.raises(pc.Gap) as gap:
        sub.recv(timeout=5)
    assert (gap.value.topic, gap.value.src, gap.value.missed) == ("demo.gaps", src, 2)
    assert "2 message(s) missed on topic 'demo.gaps'" in str(gap.value)
    # The message after the gap comes next; the gap is counted.
    assert sub.recv(timeout=5).value == 5
    assert sub.recv(timeout=5).value == 6
    assert (sub.stats["gaps"], sub.stats["missed"]) == (1, 2)
    assert sub.stats["per_topic"]["demo.gaps"]["received"] == 4
    raw.close()


def test_a_watcher_follows_the_registry(pycomd, ctx):
    watcher = ctx.watch(interface=r"com\.example\..*")
    assert watcher.view == {} and watcher.next(timeout=0.1) is None
    echo = start_rust_echo(pycomd)
    try:
        change = watcher.next(timeout=10)
        assert change is not None
        assert (change.kind, change.service, change.previous) == ("registered", "/com/example/echo", None)
        assert change.record["interfaces"] == ["com.example.echo"]
        assert change.revision == watcher.revision
        assert list(watcher.view) == ["/com/example/echo"]
        # Records the filter does not take are not changes of this view.
        other = ctx.watch(service="/demo/")
        server = pc.serve("/demo/watched", _Nothing(), ctx=ctx, block=False)
        assert other.next(timeout=10).service == "/demo/watched"
        assert watcher.next(timeout=0.2) is None
        echo.signal(2)
        gone = next(iter(watcher))
        assert gone.kind == "unregistered" and gone.record is None
        assert gone.previous["service"] == "/com/example/echo" and watcher.view == {}
        server.stop()
    finally:
        echo.stop()
    with pytest.raises(ValueError, match="not a valid regular expression"):
        ctx.watch(interface="(")


@pc.interface("demo.nothing")
class _Nothing:
    @pc.method
    def nothing(self, request):
        return None
