"""PyCOM 0.6.0 and pycomd's access control (PROTOCOL.md 7).

Usage:
  pycom06_auth.py service NAMESERVER ADDRESS SERVICE
      A 0.6 service whose interface requires authentication: 0.6 checks the
      caller's token with `validate` at the authenticator it locates (pycomd's).
  pycom06_auth.py client NAMESERVER USER PASSWORD [INTERFACE]
      A 0.6 client: logs in with Context.authenticate, calls the guarded 0.6
      service (and INTERFACE.whoami, a pycom-client service that requires
      authentication, when given), and checks the refusals without a token
      and with a wrong password. Prints ALL OK when every check held.
"""

import sys

import pycom


@pycom.interface("com.example.secure06", authentication="required")
class Secure(pycom.Service):
    """Who is calling, for callers with a token only."""

    @pycom.method(results=("name", "roles"))
    def whoami(self, request):
        """The caller's name and roles, as the authenticator says."""
        info = request.context().user_info()
        return info["name"], info["roles"]


def expect_denied(call, needle):
    # 0.6 raises a plain RemoteError with the code for remote refusals.
    try:
        call()
    except pycom.RemoteError as err:
        assert err.code == 5, (err.code, str(err))
        assert needle in str(err), (needle, str(err))
    else:
        raise AssertionError("expected code 5 (%s)" % needle)


def client(nameserver, user, password, interface=None):
    ctx = pycom.Context(nameserver=nameserver)
    ctx.authenticate(user=user, credentials=password)
    info = ctx.user_info()
    assert info["name"] == user, info
    secure = ctx.locate("com.example.secure06")
    answer = secure.invoke("whoami", {})
    assert answer["name"] == user, answer
    print("0.6 client logged in at pycomd and called a guarded 0.6 service")

    anonymous = pycom.Context(nameserver=nameserver)
    secure = anonymous.locate("com.example.secure06")
    expect_denied(lambda: secure.invoke("whoami", {}), "Authentication required")
    expect_denied(lambda: pycom.Context(nameserver=nameserver).authenticate(
        user=user, credentials=password + "-wrong"), "wrong user name or password")
    print("refused without a token, and with a wrong password")

    if interface:
        rust = ctx.locate(interface)
        answer = rust.invoke("whoami", {})
        assert answer["name"] == user, answer
        rust = anonymous.locate(interface)
        expect_denied(lambda: rust.invoke("whoami", {}), "Authentication required")
        print("a guarded pycom-client service: allowed with the token, refused without")
    print("ALL OK")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "service":
        nameserver, address, service = sys.argv[2:5]
        pycom.configure(nameserver=nameserver, address=address, service=service)
        pycom.main()
    else:
        client(*sys.argv[2:])
