"""An unmodified PyCOM 0.3.2 client: locates and invokes through pycomd.

Usage: pycom_client.py NAMESERVER SERVICE
Exits 0 when every check holds; prints one line per check.
"""

import sys

import pycom


def expect_not_found(iface, service=None):
    try:
        pycom.locate(iface, service)
    except pycom.ServiceNotFound:
        print("ServiceNotFound for %s %s" % (iface, service))
        return
    raise AssertionError("locate(%r, %r) should raise ServiceNotFound" % (iface, service))


def main():
    nameserver, service = sys.argv[1:3]
    pycom.configure(nameserver=nameserver)

    calc = pycom.locate("com.example.calc")
    assert calc.invoke("add", {"a": 2, "b": 40}) == 42
    print("add without service name: 42")

    named = pycom.locate("com.example.echo", service)
    payload = {"text": "h\u00e9llo", "list": [1, 2, 3], "nested": {"ok": True}}
    assert named.invoke("echo", payload) == payload
    print("echo with service name: round trip")

    try:
        calc.invoke("fail")
    except pycom.RemoteError as err:
        assert err.code == 4, err.code
        print("remote error code 4")
    else:
        raise AssertionError("fail should raise")

    try:
        calc.invoke("no_such_method")
    except pycom.MethodNotFound:
        print("MethodNotFound")
    else:
        raise AssertionError("no_such_method should raise MethodNotFound")

    expect_not_found("com.example.missing")
    expect_not_found("com.example.calc", "/no/such/service")

    ns = pycom.nameserver()
    stat = ns.invoke("stat")
    assert isinstance(stat, dict), stat
    print("stat ok")
    print("ALL OK")


if __name__ == "__main__":
    main()
