"""Pub-sub through pycomd with nothing but pyzmq, following PROTOCOL.md 5:
what a peer in any language does.

    pyzmq_pubsub.py NAMESERVER roundtrip
        a Python publisher and subscriber through pycomd's forwarder
    pyzmq_pubsub.py NAMESERVER subscribe TOPIC COUNT
        prints READY once subscribed, then checks COUNT publications on TOPIC
        (seq 1..COUNT from one src, body = seq)
    pyzmq_pubsub.py NAMESERVER publish TOPIC COUNT
        publishes COUNT publications on TOPIC once its path is in place

Prints ALL OK when every check held.
"""
import json
import os
import sys
import time
import uuid

import zmq

ctx = zmq.Context.instance()


def call(nameserver, interface, method, args):
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(nameserver)
    body = {"version": "1.0", "interface": interface, "method": method, "args": args}
    sock.send_multipart([b"CALL", json.dumps(body).encode()])
    status, reply = sock.recv_multipart()[:2]
    sock.close()
    assert status == b"OK", status
    reply = json.loads(reply)
    assert reply["code"] == 0, reply
    return reply["result"]


def forwarder(nameserver):
    record = call(nameserver, "org.pycom.nameserver", "locate", {"interface": "org.pycom.pubsub"})
    return record["metadata"]["xsub"], record["metadata"]["xpub"]


def subscriber(xpub, prefix):
    """A SUB socket, ready: the forwarder answered our readiness topic."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(xpub)
    sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    ready = ("org.pycom.pubsub.ready." + uuid.uuid4().hex).encode()
    sub.setsockopt(zmq.SUBSCRIBE, ready)
    early = []
    deadline = time.time() + 10
    while time.time() < deadline:
        if not sub.poll(200):
            continue
        frames = sub.recv_multipart()
        if frames[0] == ready:
            sub.setsockopt(zmq.UNSUBSCRIBE, ready)
            return sub, early
        early.append(frames)
    raise AssertionError("the forwarder never answered the readiness topic")


def publisher(xsub):
    """An XPUB socket: ready once the forwarder's subscription arrives."""
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 2000)
    pub.connect(xsub)
    assert pub.poll(10000), "the forwarder never subscribed"
    assert pub.recv() == b"\x01"
    return pub


def publish(pub, src, topic, count):
    for seq in range(1, count + 1):
        header = {"src": src, "seq": seq, "ts": int(time.time() * 1000)}
        pub.send_multipart([topic.encode(), json.dumps(header).encode(), json.dumps(seq).encode()])


def expect(sub, topic, count):
    src = None
    for seq in range(1, count + 1):
        assert sub.poll(10000), "publication %d of %d did not come" % (seq, count)
        frames = sub.recv_multipart()
        assert frames[0] == topic.encode(), frames[0]
        header = json.loads(frames[1])
        assert isinstance(header["src"], str) and isinstance(header["ts"], int), header
        src = src or header["src"]
        assert header["src"] == src and header["seq"] == seq, (header, seq)
        assert json.loads(frames[2]) == seq


def main():
    nameserver, mode = sys.argv[1], sys.argv[2]
    xsub, xpub = forwarder(nameserver)
    if mode == "roundtrip":
        sub, _ = subscriber(xpub, "py.round")
        pub = publisher(xsub)
        publish(pub, uuid.uuid4().hex, "py.roundtrip", 500)
        expect(sub, "py.roundtrip", 500)
        stat = call(nameserver, "org.pycom.pubsub", "stat", None)
        assert stat["messages_in"] >= 500, stat
    elif mode == "subscribe":
        topic, count = sys.argv[3], int(sys.argv[4])
        sub, _ = subscriber(xpub, topic)
        print("READY", flush=True)
        expect(sub, topic, count)
    elif mode == "publish":
        topic, count = sys.argv[3], int(sys.argv[4])
        pub = publisher(xsub)
        publish(pub, uuid.uuid4().hex, topic, count)
        pub.close()
    else:
        raise SystemExit("unknown mode " + mode)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
