"""Type stubs of pycom_client._native (python/src/), for editors and type
checkers. Times are in seconds (floats); values are JSON-shaped: dict with
str keys, list, tuple, str, int, float, bool, None."""

import os
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union, overload

JSON = Any
BinaryLike = Union["Binary", bytes, bytearray, str, "os.PathLike[str]"]

DEFAULT_NAMESERVER: str

class Binary:
    """Bytes to send as an attachment: ``Binary(b"...")``, or ``Binary(path)``
    for a file's contents (read when made; OSError names the file)."""

    def __init__(self, source: Union[bytes, bytearray, str, "os.PathLike[str]"]) -> None: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...

class Attachment:
    """A received attachment: in memory, or above 1 MiB in a temporary file
    deleted with the attachment."""

    @property
    def path(self) -> Optional[str]:
        """The temporary file of a large attachment, else None."""
    def read(self) -> bytes:
        """The contents."""
    def save(self, path: Union[str, "os.PathLike[str]"]) -> str:
        """Write the contents to ``path``; returns it."""
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...

class Caller:
    """Who pycomd says a caller is."""

    name: str
    roles: List[str]
    def has_role(self, role: str) -> bool:
        """Whether it holds ``role`` (or ``admin``, which holds every role)."""

class Login:
    """What a login gave."""

    token: str
    expires_ms: int
    caller: Caller

class Context:
    """Which nameservers to ask, and the token and timeout every call made
    through it carries. Share it between threads."""

    def __init__(self, nameservers: Optional[str] = None, *, timeout: Optional[float] = None,
                 token: Optional[str] = None) -> None:
        """``Context("tcp://host:2012")`` (several comma-separated, tried in
        order); without one, PYCOM_NAMESERVER, else tcp://127.0.0.1:2012,
        with PYCOM_TOKEN and PYCOM_SERVER_KEY if set."""
    @property
    def nameservers(self) -> List[str]: ...
    timeout: float
    """Seconds each call waits for its reply (components copy it when made)."""
    token: Optional[str]
    """The token calls carry (None: none)."""
    def locate(self, interface: str, service: Optional[str] = None) -> "Component":
        """A component for a live provider of ``interface`` (of ``service``)."""
    def connect(self, address: str, interface: str) -> "Component":
        """A component at a known address (never re-located)."""
    def workflow(self, service: str) -> "Component":
        """The workflow served at ``service`` (interface org.pycom.workflow):
        ``invoke(task, args)`` runs one of its tasks."""
    def publisher(self, topic: str, *, timeout: Optional[float] = None) -> "Publisher":
        """A publisher on ``topic``, ready when returned."""
    def subscribe(self, *patterns: str, start: str = "new", gaps: str = "log",
                  timeout: Optional[float] = None) -> "Subscriber":
        """A subscriber to ``a.b.c``, ``a.*.c``, ``a.>`` patterns, ready when
        returned. ``start``: "new" or "last" (each topic's last value first);
        ``gaps``: "log", "ignore" or "error" (raise ``Gap``)."""
    def watch(self, *, interface: Optional[str] = None, service: Optional[str] = None) -> "Watcher":
        """A live view of the registry records matching the regular
        expressions (anchored at the start, as ``re.match``)."""
    def login(self, user: str, password: str) -> Login:
        """Log in to pycomd; every call through this context carries the token."""
    def logout(self) -> None:
        """End the token at pycomd; carry none."""
    def whoami(self) -> Caller:
        """Who pycomd says the carried token belongs to."""
    def stat(self) -> Dict[str, Any]:
        """pycomd's statistics."""
    def list_services(self, *, interface: Optional[str] = None,
                      service: Optional[str] = None) -> List[Dict[str, Any]]:
        """Registry records (service, address, interfaces, metadata)."""

class Component:
    """One remote interface: calls with a timeout, retried on a live provider
    after the service restarts or moves. One per thread for parallel calls."""

    @property
    def interface(self) -> str: ...
    @property
    def address(self) -> str:
        """Where calls go now (it changes when the service moves)."""
    @property
    def session_id(self) -> Optional[str]: ...
    timeout: float
    """Seconds each try of each call waits for its reply."""
    @overload
    def invoke(self, method: str, args: JSON = None, *, attachments: Optional[Sequence[BinaryLike]] = None,
               with_binary: Literal[False] = False, timeout: Optional[float] = None) -> JSON: ...
    @overload
    def invoke(self, method: str, args: JSON = None, *, attachments: Optional[Sequence[BinaryLike]] = None,
               with_binary: Literal[True], timeout: Optional[float] = None) -> Tuple[JSON, List[Attachment]]: ...
    def set_retry(self, attempts: int, *, never: Optional[Sequence[str]] = None) -> None:
        """Tries in all after a transport failure; ``never``: methods that
        must not run twice."""
    def login(self, user: str, password: str) -> Login:
        """Log in at this component's own service (a password file of its own)."""
    def logout(self) -> None: ...
    def __enter__(self) -> "Component": ...
    def __exit__(self, *args: Any) -> None: ...

class Publisher:
    """Publishes through pycomd's forwarder; never blocks."""

    @property
    def topic(self) -> str: ...
    @property
    def src(self) -> str:
        """This publisher instance's id."""
    def publish(self, value: JSON, *, topic: Optional[str] = None,
                attachments: Optional[Sequence[BinaryLike]] = None) -> int:
        """Publish ``value``; returns its sequence number on its topic."""

class Message:
    """One publication."""

    topic: str
    src: str
    seq: int
    ts: int
    replay: bool
    value: JSON
    attachments: List[Attachment]

class Values:
    """A subscriber's values, for ever; ``values[:10]`` takes the next ten."""

    def __iter__(self) -> Iterator[JSON]: ...
    def __next__(self) -> JSON: ...
    def __getitem__(self, key: slice) -> Iterator[JSON]: ...

class Subscriber:
    """Receives what matches its patterns, in order per publisher, without
    duplicates, gaps counted. Iterating waits for ever (Ctrl-C stops it)."""

    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, or None after ``timeout`` seconds."""
    def values(self) -> Values: ...
    @property
    def stats(self) -> Dict[str, Any]:
        """received, gaps, missed, duplicates, per_topic, malformed, unmatched, replays_skipped."""
    def __iter__(self) -> Iterator[Message]: ...
    def __next__(self) -> Message: ...

class Change:
    """One change of a watcher's view."""

    kind: str
    service: str
    record: Optional[Dict[str, Any]]
    previous: Optional[Dict[str, Any]]
    revision: int

class Watcher:
    """A live view of the registry; iterate it for the changes."""

    @property
    def view(self) -> Dict[str, Dict[str, Any]]: ...
    @property
    def revision(self) -> int: ...
    def next(self, timeout: Optional[float] = None) -> Optional[Change]:
        """The next change, or None after ``timeout`` seconds."""
    def __iter__(self) -> Iterator[Change]: ...
    def __next__(self) -> Change: ...

class Auth:
    """Who may call a hosted interface or method."""

    @staticmethod
    def required() -> "Auth": ...
    @staticmethod
    def roles(*roles: str) -> "Auth": ...
    @staticmethod
    def public() -> "Auth": ...
    @staticmethod
    def password_file(path: Union[str, "os.PathLike[str]"]) -> "Auth": ...

class Request:
    """A call as a handler sees it."""

    interface: str
    method: str
    args: JSON
    session: Dict[str, Any]
    caller: Optional[Caller]
    token: Optional[str]
    attachments: List[Attachment]
    extensions: Dict[str, Any]

class Reply:
    """A handler's result with attachments."""

    value: JSON
    attachments: Sequence[BinaryLike]
    def __init__(self, value: JSON = None, attachments: Optional[Sequence[BinaryLike]] = None) -> None: ...

class Interface:
    """An interface to serve (the decorators make these)."""

    def __init__(self, name: str, *, doc: str = "", auth: Optional[Auth] = None,
                 data: Optional[Dict[str, Any]] = None) -> None: ...
    def method(self, name: str, handler: Callable[[Request], Any], *, doc: str = "",
               required: Sequence[str] = (), optional: Sequence[str] = (), results: Sequence[str] = (),
               attachments: Tuple[Optional[str], Optional[str]] = (None, None),
               auth: Optional[Auth] = None) -> None: ...

class Server:
    """A service being served."""

    @property
    def endpoint(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def stop(self) -> None:
        """Unregister, finish the calls in hand, stop."""
    def __enter__(self) -> "Server": ...
    def __exit__(self, *args: Any) -> None: ...

def start_service(service: str, interfaces: Sequence[Interface], *, ctx: Optional[Context] = None,
                  bind: str = "tcp://127.0.0.1:*", advertise: Optional[str] = None, lease: float = 10.0,
                  workers: int = 4, metadata: Optional[Dict[str, str]] = None,
                  register: bool = True) -> Server: ...
