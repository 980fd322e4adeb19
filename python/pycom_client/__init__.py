"""pycom_client: pycom's thin client for Python, built on the pycom-client
Rust library (one implementation of the wire, recovery, pub-sub and access
control for both languages).

    import pycom_client as pc
    ctx = pc.Context("tcp://127.0.0.1:2012")          # or from PYCOM_NAMESERVER
    echo = ctx.locate("com.example.echo")
    echo.invoke("echo", {"hello": "world"})

    @pc.interface("demo.interface.name")
    class Demo:
        @pc.method()
        def add(self, request, a, b): return a + b
    pc.serve("/demo/service", Demo(), ctx=ctx)        # registers with a lease, renews, unregisters

Calls that wait release the GIL; a subscriber's or watcher's endless wait
is interrupted by Ctrl-C; errors are exceptions per result code
(``pc.ServiceNotFound``, ``pc.AccessDenied``...) with ``.code``.
"""

from ._native import (
    DEFAULT_NAMESERVER,
    Attachment,
    Auth,
    Binary,
    Caller,
    Change,
    Component,
    Context,
    Interface,
    Login,
    Message,
    Publisher,
    Reply,
    Request,
    Server,
    Subscriber,
    Values,
    Watcher,
)
from .errors import (
    AccessDenied,
    AttachmentError,
    BadRequest,
    DataError,
    EndpointError,
    Failed,
    Gap,
    MalformedReply,
    MethodNotFound,
    NotReady,
    PycomError,
    RemoteError,
    ServiceNotAvailable,
    ServiceNotFound,
    SessionExpired,
    Timeout,
    TransportError,
    Unavailable,
)
from ._hosting import interface, method, serve

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMESERVER", "Attachment", "Auth", "Binary", "Caller", "Change", "Component",
    "Context", "Interface", "Login", "Message", "Publisher", "Reply", "Request", "Server",
    "Subscriber", "Values", "Watcher",
    "AccessDenied", "AttachmentError", "BadRequest", "DataError", "EndpointError", "Failed",
    "Gap", "MalformedReply", "MethodNotFound", "NotReady", "PycomError", "RemoteError",
    "ServiceNotAvailable", "ServiceNotFound", "SessionExpired", "Timeout", "TransportError",
    "Unavailable",
    "interface", "method", "serve",
]
