"""The exceptions pycom_client raises: one class per result code (with the
code as the class attribute ``code``), and the ways a call can fail on the
way there (``code`` None).

A handler that raises one of the coded ones answers its caller with that
code and message (``raise pc.BadRequest("a must be positive")``); any other
exception is code 1 (``RemoteError`` to the caller), naming its type.
"""

from typing import Optional


class PycomError(Exception):
    """Base class of everything pycom_client raises."""

    code: Optional[int] = None


class RemoteError(PycomError):
    """Code 1: the remote side failed (or answered with a code unknown here)."""

    code = 1


class MethodNotFound(PycomError):
    """Code 2: the interface is known, the method is not."""

    code = 2


class ServiceNotFound(PycomError):
    """Code 3: nothing live provides what was asked."""

    code = 3


class BadRequest(PycomError):
    """Code 4: the request was wrong (a field, a size, a pattern)."""

    code = 4


class AccessDenied(PycomError):
    """Code 5: not allowed (no token, an unknown or expired one, no grant)."""

    code = 5


class SessionExpired(PycomError):
    """Code 6: the session is unknown or expired; the next call starts a new one."""

    code = 6


class Unavailable(PycomError):
    """Code 7: temporarily unable; a retry may succeed."""

    code = 7


#: PyCOM's name for code 7.
ServiceNotAvailable = Unavailable


class Timeout(PycomError, TimeoutError):
    """No reply within the timeout (the call may still have run). ``endpoint``
    says who did not answer."""


class TransportError(PycomError, ConnectionError):
    """ZeroMQ failed talking to ``endpoint``."""


class EndpointError(PycomError, ValueError):
    """An endpoint string ZeroMQ cannot use (``endpoint``)."""


class Failed(PycomError):
    """The peer answered FAIL: it could not understand the request at all."""


class MalformedReply(PycomError):
    """The reply was not valid ZeroJSON."""


class DataError(PycomError, ValueError):
    """Arguments could not be encoded, or a result did not have the expected shape."""


class AttachmentError(PycomError):
    """An attachment was too large, or could not be read or spilled."""


class NotReady(PycomError):
    """pycomd's pub-sub forwarder did not answer in time (``endpoint``)."""


class Gap(PycomError):
    """A subscriber with ``gaps="error"`` missed ``missed`` publications on
    ``topic`` from publisher ``src``; the message after the gap comes next."""

    topic: str
    src: str
    missed: int


__all__ = [
    "PycomError",
    "RemoteError",
    "MethodNotFound",
    "ServiceNotFound",
    "BadRequest",
    "AccessDenied",
    "SessionExpired",
    "Unavailable",
    "ServiceNotAvailable",
    "Timeout",
    "TransportError",
    "EndpointError",
    "Failed",
    "MalformedReply",
    "DataError",
    "AttachmentError",
    "NotReady",
    "Gap",
]
