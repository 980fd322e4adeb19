"""PyCOM 0.6.0's client and proxy client calling a PyCOM 0.6 service
(tests/interop/pycom06_service.py) located through pycomd.

Usage: pycom06_client.py NAMESERVER SERVICE
Exits 0 and prints ALL OK when every check holds.
"""

import sys

import pycom


def main():
    nameserver, service = sys.argv[1:3]

    # The plain client: Context.locate (with and without a service name).
    ctx = pycom.Context(nameserver=nameserver)
    calc = ctx.locate("com.example.calc06")
    assert calc.invoke("add", {"a": 2, "b": 40}) == {"total": 42}
    calc = ctx.locate("com.example.calc06", service)
    assert calc.invoke("divmod", {"a": 7, "b": 2}) == {"quotient": 3, "remainder": 1}
    try:
        calc.invoke("divmod", {"a": 1, "b": 0})
    except pycom.RemoteError as err:
        assert err.code == 4, err.code
    else:
        raise AssertionError("divmod by zero should fail")
    try:
        calc.invoke("nope")
    except pycom.MethodNotFound:
        pass
    else:
        raise AssertionError("nope should raise MethodNotFound")
    try:
        ctx.locate("com.example.calc06", "/no/such/service")
    except pycom.ServiceNotFound:
        pass
    else:
        raise AssertionError("locate of a missing service should fail")
    files = ctx.locate("com.example.files06")
    assert files.invoke("upload", {}, attachment=b"h\xc3\xa9llo") == \
        {"size": 6, "text": "h\u00e9llo"}
    result, blob = files.invoke("download", {"name": "x"})
    assert result == {"name": "x"} and blob == b"contents of x", (result, blob)
    print("client: locate, invoke, errors, one attachment each way")

    # The proxy client: introspect first, then Python calls.
    proxy = pycom.ProxyContext(nameserver=nameserver)
    calc = proxy.locate("com.example.calc06")
    assert calc.add(2, 3) == 5
    assert calc.add(2, 3, c=4) == 9
    assert tuple(calc.divmod(7, 2)) == (3, 1)
    assert calc.divmod(a=7, b=2).remainder == 1
    # Through the proxy, introspect's four results make a namedtuple.
    intro = calc.introspect()
    assert intro.data == {"com.example.calc06.flavour": "python"}, intro
    assert intro.methods["introspect"]["results"] == \
        ["name", "methods", "docstring", "data"], intro
    files = proxy.locate("com.example.files06", service)
    got = files.download("y")
    assert got.name == "y" and got.blob == b"contents of y", got
    print("proxy: add, divmod, introspect data, download")
    print("ALL OK")


if __name__ == "__main__":
    main()
