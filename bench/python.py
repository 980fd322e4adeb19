"""The Python client against raw pyzmq, in the same run (BENCHMARKS.md
"Python"). bench/run.sh's `python` block runs it; by hand:

    python bench/python.py NAMESERVER [--duration S] [--repeat N] [--window W] [--json]

with pycomd at NAMESERVER and pycom-client's echo service (the
echo_service example) registered there.

- invoke: one thread calling `Component.invoke("echo", {...})` on the Rust
  echo service, back to back, against a pyzmq REQ socket sending the same
  request to the same service (the body encoded once: the wire alone) and
  reading the reply.
- pubsub: one thread publishing a window of W publications through
  pycomd's forwarder and then receiving them (values decoded), again and
  again, against pyzmq XPUB/SUB sockets sending the same frames
  (PROTOCOL.md 5: topic, header with src/seq/ts, JSON body) with the
  header formatted from a byte template and nothing decoded on receipt
  (again the wire alone: no duplicate or gap checks either). One thread each way keeps the GIL out of it: what is measured
  is what Python pays per message.

Each measurement runs --repeat times, alternating pycom_client and raw;
the medians are reported, and the median of the per-round ratios.
"""

import argparse
import json
import statistics
import sys
import time
import uuid

import zmq

import pycom_client as pc

PAYLOAD = {"hello": "world", "n": 42}


def rate(fn, duration):
    """Calls of fn per second (fn returns how many operations it did)."""
    fn()  # warm-up: connections, caches
    done, start = 0, time.perf_counter()
    deadline = start + duration
    while True:
        done += fn()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def invoke_pycom(echo):
    def one():
        for _ in range(100):
            echo.invoke("echo", PAYLOAD)
        return 100
    return one


def invoke_raw(address):
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    body = json.dumps({"version": "1.0", "interface": "com.example.echo", "method": "echo",
                       "args": PAYLOAD}).encode()
    frames = [b"CALL", body]

    def one():
        for _ in range(100):
            sock.send_multipart(frames)
            sock.recv_multipart()
        return 100
    return one, sock


def pubsub_pycom(ctx, topic, window):
    sub = ctx.subscribe(topic)
    pub = ctx.publisher(topic)
    values = sub.values()

    def one():
        for i in range(window):
            pub.publish(i)
        for value in values[:window]:
            pass
        return window
    return one


def pubsub_raw(xsub, xpub, topic, window):
    zctx = zmq.Context.instance()
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.connect(xpub)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    ready = ("org.pycom.pubsub.ready." + uuid.uuid4().hex).encode()
    sub.setsockopt(zmq.SUBSCRIBE, ready)
    while sub.recv_multipart()[0] != ready:
        pass
    sub.setsockopt(zmq.UNSUBSCRIBE, ready)
    pub = zctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 100000)
    pub.connect(xsub)
    assert pub.poll(10000), "the forwarder never subscribed"
    pub.recv()
    src, seq, encoded_topic = uuid.uuid4().hex.encode(), [0], topic.encode()
    header = b'{"src":"' + src + b'","seq":%d,"ts":%d}'

    def one():
        # The wire alone: headers formatted, not JSON-encoded; bodies not decoded.
        for i in range(window):
            seq[0] += 1
            pub.send_multipart([encoded_topic, header % (seq[0], time.time_ns() // 1000000), b"%d" % i])
        for _ in range(window):
            sub.recv_multipart()
        return window
    return one, (sub, pub)


def forwarder(ctx):
    record = [s for s in ctx.list_services() if s["service"] == "/org/pycom/pubsub"][0]
    return record["metadata"]["xsub"], record["metadata"]["xpub"]


def measure(name, pycom_fn, raw_fn, args):
    rounds = []
    for _ in range(args.repeat):
        raw = rate(raw_fn, args.duration)
        ours = rate(pycom_fn, args.duration)
        rounds.append((ours, raw))
    ours = statistics.median(r[0] for r in rounds)
    raw = statistics.median(r[1] for r in rounds)
    ratio = statistics.median(r[0] / r[1] for r in rounds)
    spread = (min(r[0] / r[1] for r in rounds), max(r[0] / r[1] for r in rounds))
    row = {"op": name, "pycom_client_per_s": round(ours), "raw_pyzmq_per_s": round(raw),
           "ratio": round(ratio, 3), "ratio_min": round(spread[0], 3), "ratio_max": round(spread[1], 3),
           "repeat": args.repeat, "duration_s": args.duration}
    if args.json:
        print(json.dumps(row), flush=True)
    else:
        print("%-8s pycom_client %9.0f/s  raw pyzmq %9.0f/s  ratio %.2f (rounds %.2f-%.2f, median of %d)"
              % (name, ours, raw, ratio, spread[0], spread[1], args.repeat), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nameserver")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians reported")
    parser.add_argument("--window", type=int, default=500, help="pub-sub: publications in flight")
    parser.add_argument("--ops", default="invoke,pubsub")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ctx = pc.Context(args.nameserver, timeout=5)
    ops = args.ops.split(",")
    if "invoke" in ops:
        echo = ctx.locate("com.example.echo")
        raw, sock = invoke_raw(echo.address)
        measure("invoke", invoke_pycom(echo), raw, args)
        sock.close()
    if "pubsub" in ops:
        xsub, xpub = forwarder(ctx)
        ours = pubsub_pycom(ctx, "bench.python.client", args.window)
        raw, socks = pubsub_raw(xsub, xpub, "bench.python.raw", args.window)
        measure("pubsub", ours, raw, args)
        for s in socks:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
