"""PyCOM 0.4.2's proxy client against pycomd and a Rust-hosted service.

Usage: pycom04_proxy.py NAMESERVER
The proxy calls `introspect` first, then turns Python calls into remote
calls: positional arguments by `required_arguments`, results by `results`.
Exits 0 when every check holds.
"""

import sys

import pycom04_compat  # noqa: F401 (before pycom: inspect.getargspec)
import pycom  # noqa: E402


def main():
    ctx = pycom.ProxyContext(nameserver=sys.argv[1])

    ns = ctx.nameserver()
    me = ns.locate("org.pycom.nameserver")
    assert me.service == "/org/pycom/nameserver", me
    print("nameserver locate ->", me.address)

    calc = ctx.locate("test.calc")
    assert calc.add(2, 3) == 5
    assert calc.add(a=2, b=3, c=4) == 9
    assert calc.divide(9, 3) == 3
    print("calc via proxy: add, divide")
    try:
        calc.add(1)
    except TypeError as err:
        print("missing argument caught by the proxy:", err)
    else:
        raise AssertionError("the proxy should know 'b' is required")
    try:
        calc.divide(1, 0)
    except pycom.RemoteError as err:
        assert err.code == 4, err.code
        print("remote error code 4")
    else:
        raise AssertionError("divide by zero should fail")
    print("ALL OK")


if __name__ == "__main__":
    main()
