"""Access control from Python: log in to pycomd, carry the token, host a
guarded interface that reads its caller, refusals as AccessDenied."""

import subprocess

import pytest

import pycom_client as pc
from conftest import Pycomd, binary


def users_line(user: str, password: str) -> str:
    out = subprocess.run([str(binary("pycomctl")), "auth", "passwd", user, "--password-stdin"],
                         input=password + "\n", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def secured(tmp_path):
    users = tmp_path / "users"
    users.write_text(users_line("svc-billing", "billing-pw") + "\n" + users_line("root", "root-pw") + "\n")
    daemon = Pycomd(config=(
        "[auth]\nenabled = true\nusers_file = %r\n"
        "[auth.roles]\nbilling = [\"svc-billing\"]\nadmin = [\"root\"]\n"
        "[[auth.grant]]\nrole = \"billing\"\nregister = [\"/demo/billing/\"]\ncall = [\"demo.*\"]\n"
        % str(users)))
    yield daemon
    daemon.stop()


@pc.interface("demo.billing", auth=pc.Auth.required())
class Billing:
    @pc.method
    def whoami(self, request):
        return {"name": request.caller.name, "roles": request.caller.roles,
                "has_token": request.token is not None}

    @pc.method(auth=pc.Auth.roles("admin"))
    def refund(self, request, amount):
        return amount

    @pc.method(auth=pc.Auth.public())
    def ping(self, request):
        return request.caller is None


def test_login_carries_the_token_to_every_call(secured):
    ctx = pc.Context(secured.endpoint, timeout=5)
    with pytest.raises(pc.AccessDenied) as err:
        ctx.login("svc-billing", "wrong")
    assert err.value.code == 5
    login = ctx.login("svc-billing", "billing-pw")
    assert login.token == ctx.token and login.expires_ms > 0
    assert login.caller.name == "svc-billing" and login.caller.has_role("billing")
    assert ctx.whoami().name == "svc-billing"

    # Its registration carries the token too: the grant allows /demo/billing/.
    server = pc.serve("/demo/billing/main", Billing(), ctx=ctx, block=False)
    try:
        billing = ctx.locate("demo.billing")
        assert billing.invoke("whoami") == {"name": "svc-billing", "roles": ["billing"], "has_token": True}
        with pytest.raises(pc.AccessDenied, match="access denied"):
            billing.invoke("refund", {"amount": 5})
        anonymous = pc.Context(secured.endpoint, timeout=5)
        stranger = anonymous.locate("demo.billing")
        with pytest.raises(pc.AccessDenied, match="Authentication required"):
            stranger.invoke("whoami")
        assert stranger.invoke("ping") is True
        root = pc.Context(secured.endpoint, timeout=5)
        root.login("root", "root-pw")
        assert root.locate("demo.billing").invoke("refund", {"amount": 5}) == 5
        # Nobody else may take the name, nor register outside the grants.
        with pytest.raises(pc.AccessDenied):
            pc.serve("/demo/other", Billing(), ctx=ctx, block=False)
    finally:
        server.stop()
    ctx.logout()
    assert ctx.token is None
    with pytest.raises(pc.AccessDenied, match="not logged in"):
        ctx.whoami()
