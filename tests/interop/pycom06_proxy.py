"""PyCOM 0.6.0's proxy client (ProxyContext) against pycomd's own interface
and against services hosted by pycom-client.

Usage: pycom06_proxy.py NAMESERVER
The proxy calls `introspect` first and reads, per method,
`required_arguments`, `results` and `attachments` (0.6 fails with KeyError
without the last). Exits 0 and prints ALL OK when every check holds.
"""

import sys

import pycom

NULL_ATTACHMENTS = {"incoming": None, "outgoing": None}


def main():
    nameserver = sys.argv[1]
    ctx = pycom.ProxyContext(nameserver=nameserver)

    # pycomd's own interface, org.pycom.nameserver.
    ns = ctx.nameserver()
    me = ns.locate("org.pycom.nameserver")
    assert me.service == "/org/pycom/nameserver", me
    assert "org.pycom.nameserver" in me.interfaces, me
    assert isinstance(ns.stat(), dict)
    listed = ns.list_services(interface="test\\.")
    assert sorted(s["service"] for s in listed) == ["/test/calc", "/test/files"], \
        listed
    intro = ns.introspect()
    assert intro.name == "org.pycom.nameserver", intro
    assert intro.data == {}, intro
    assert intro.methods["introspect"]["results"] == \
        ["name", "methods", "docstring", "data"], intro
    for name, method in intro.methods.items():
        assert method["attachments"] == NULL_ATTACHMENTS, (name, method)
    print("nameserver via proxy: locate ->", me.address, "; stat; list_services")

    # A service declared with pycom-client's interface! macro.
    calc = ctx.locate("test.calc")
    assert calc.add(2, 3) == 5
    assert calc.add(a=2, b=3, c=4) == 9
    assert calc.divide(9, 3) == 3
    assert calc.add.__doc__ == "Add a and b, and c when given.", calc.add.__doc__
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
    else:
        raise AssertionError("divide by zero should fail")
    print("test.calc via proxy: add, divide, docstring, errors")

    # A service built with Method::attachments and Interface::data.
    files = ctx.locate("test.files")
    intro = files.introspect()
    assert intro.data == {"test.files.max_size": 1024}, intro
    assert intro.methods["download"]["attachments"] == \
        {"incoming": None, "outgoing": "blob"}, intro
    assert intro.methods["upload"]["attachments"] == \
        {"incoming": "blob", "outgoing": None}, intro
    got = files.download("z")
    assert got.name == "z" and got.blob == b"contents of z", got
    # 0.6's proxy also sends the incoming attachment as a JSON argument,
    # which Python 3 cannot encode: upload goes through the plain client.
    plain = pycom.Context(nameserver=nameserver).locate("test.files")
    result = plain.invoke("upload", {}, attachment=b"h\xc3\xa9llo")
    assert result == {"size": 6, "text": "h\u00e9llo"}, result
    print("test.files: data, attachments, download via proxy, upload")
    print("ALL OK")


if __name__ == "__main__":
    main()
