"""Hosting Python objects as pycom services, the PyCOM way:
``@interface`` on a class, ``@method`` on its methods, ``serve`` to
register, renew and unregister.

The wire, sessions, access control and the lease are pycom-client's
(``_native.start_service``); this module only reads the decorated class:
which methods, which arguments (from their signatures, as PyCOM 0.6
does), and turns return values and exceptions into replies.
"""

import inspect
import logging
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _native
from .errors import BadRequest, PycomError

log = logging.getLogger("pycom_client")


class _InterfaceInfo:
    __slots__ = ("name", "doc", "auth", "data")

    def __init__(self, name, doc, auth, data):
        self.name, self.doc, self.auth, self.data = name, doc, auth, data


class _MethodInfo:
    __slots__ = ("name", "doc", "results", "attachments", "auth",
                 "required", "optional", "takes_any")

    def __init__(self, func, name, results, attachments, auth, doc):
        self.name = name
        self.doc = doc if doc is not None else (inspect.getdoc(func) or "")
        self.results = tuple(results)
        self.attachments = tuple(attachments)
        self.auth = auth
        self.required: List[str] = []
        self.optional: List[str] = []
        self.takes_any = False
        params = list(inspect.signature(func).parameters.values())
        # (self, request, ...): the arguments after those two come from args.
        if len(params) < 2 or params[1].kind not in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise TypeError(
                "@method %s: the method must take (self, request, ...), as PyCOM's do"
                % func.__qualname__)
        for p in params[2:]:
            if p.kind == inspect.Parameter.VAR_KEYWORD:
                self.takes_any = True
            elif p.kind == inspect.Parameter.VAR_POSITIONAL:
                continue
            elif p.default is inspect.Parameter.empty:
                self.required.append(p.name)
            else:
                self.optional.append(p.name)


def interface(name: str, *, doc: Optional[str] = None, auth: Optional[_native.Auth] = None,
              data: Optional[Dict[str, Any]] = None) -> Callable[[type], type]:
    """Class decorator: instances of the class serve the interface ``name``.

    ``auth`` guards every method (``pc.Auth.required()``,
    ``pc.Auth.roles("billing")``) unless a method says otherwise; ``doc``
    (default: the class docstring) and ``data`` are what ``introspect``
    shows."""

    def wrap(cls: type) -> type:
        cls.__pycom_interface__ = _InterfaceInfo(
            name, doc if doc is not None else (inspect.getdoc(cls) or ""), auth, data)
        return cls

    return wrap


def method(name: Any = None, *, results: Sequence[str] = (),
           attachments: Tuple[Optional[str], Optional[str]] = (None, None),
           auth: Optional[_native.Auth] = None, doc: Optional[str] = None) -> Any:
    """Method decorator: ``@method``, ``@method()`` or ``@method("name")``.

    The method takes ``(self, request, ...)``: the parameters after
    ``request`` are taken from the call's args by name (those without a
    default are required: a call without one gets ``BadRequest``), as
    PyCOM 0.6 does; ``**kwargs`` takes every argument. ``results`` names
    the items of a returned tuple (the reply is then an object); with
    ``attachments=(incoming, outgoing)``, the argument ``incoming`` is the
    call's first attachment (bytes) and the result ``outgoing`` goes back
    as an attachment. ``auth`` overrides the interface's."""

    def mark(func: Callable, method_name: str) -> Callable:
        func.__pycom_method__ = _MethodInfo(func, method_name, results, attachments, auth, doc)
        return func

    if callable(name):
        return mark(name, name.__name__)

    def wrap(func: Callable) -> Callable:
        return mark(func, name if name is not None else func.__name__)

    return wrap


def _handler(bound: Callable, info: _MethodInfo, interface_name: str) -> Callable:
    """The callable pycom-client runs for one call: arguments bound from
    ``request.args``, the result shaped as declared."""
    incoming, outgoing = (info.attachments + (None, None))[:2]
    binds = bool(info.required or info.optional or info.takes_any)
    where = "%s.%s" % (interface_name, info.name)

    def handle(request):
        try:
            if binds:
                args = request.args if request.args is not None else {}
                if not isinstance(args, dict):
                    raise BadRequest("%s takes its arguments as an object, not %s"
                                     % (where, type(args).__name__))
                kwargs = {}
                for n in info.required:
                    if n == incoming:
                        if not request.attachments:
                            raise BadRequest("%s needs an attachment (%s)" % (where, n))
                        kwargs[n] = request.attachments[0].read()
                    elif n in args:
                        kwargs[n] = args[n]
                    else:
                        raise BadRequest("%s: argument '%s' is required" % (where, n))
                for n in info.optional:
                    if n == incoming and request.attachments:
                        kwargs[n] = request.attachments[0].read()
                    elif n in args:
                        kwargs[n] = args[n]
                if info.takes_any:
                    for k, v in args.items():
                        kwargs.setdefault(k, v)
                result = bound(request, **kwargs)
            else:
                result = bound(request)
            return _shape(result, info, outgoing, where)
        except PycomError:
            raise
        except Exception:
            # The caller gets code 1 naming the exception; the traceback
            # stays here, where it can be read.
            log.exception("%s failed", where)
            raise

    return handle


def _shape(result: Any, info: _MethodInfo, outgoing: Optional[str], where: str) -> Any:
    if not info.results or isinstance(result, _native.Reply):
        return result
    if len(info.results) == 1:
        result = (result,)
    if not isinstance(result, tuple) or len(result) != len(info.results):
        raise TypeError("%s must return a tuple of %d items (%s)"
                        % (where, len(info.results), ", ".join(info.results)))
    named = dict(zip(info.results, result))
    if outgoing is not None and outgoing in named:
        blob = named.pop(outgoing)
        files = [] if blob is None else [blob if isinstance(blob, _native.Binary) else _native.Binary(blob)]
        return _native.Reply(named, files)
    return named


def _interface_of(obj: Any) -> _native.Interface:
    """The native Interface an instance of a decorated class serves."""
    cls = obj if isinstance(obj, type) else type(obj)
    info = getattr(cls, "__pycom_interface__", None)
    if info is None:
        raise TypeError("%s is not a pycom interface: decorate its class with "
                        "@pycom_client.interface(name)" % cls.__qualname__)
    if isinstance(obj, type):
        obj = obj()
    iface = _native.Interface(info.name, doc=info.doc, auth=info.auth, data=info.data)
    seen = set()
    for klass in cls.__mro__:
        for attr, func in vars(klass).items():
            m = getattr(func, "__pycom_method__", None)
            if m is None or attr in seen:
                continue
            seen.add(attr)
            iface.method(m.name, _handler(getattr(obj, attr), m, info.name), doc=m.doc,
                         required=m.required, optional=m.optional, results=list(m.results),
                         attachments=(m.attachments + (None, None))[:2], auth=m.auth)
    return iface


def serve(service: str, *objects: Any, ctx: Optional[_native.Context] = None,
          bind: str = "tcp://127.0.0.1:*", advertise: Optional[str] = None,
          lease: float = 10.0, workers: int = 4, metadata: Optional[Dict[str, str]] = None,
          register: bool = True, block: bool = True) -> _native.Server:
    """Serve ``objects`` (instances of ``@interface`` classes) as ``service``.

    Binds ``bind`` (an ephemeral port on 127.0.0.1 by default), registers
    with a lease of ``lease`` seconds at ``ctx``'s nameservers (default:
    ``PYCOM_NAMESERVER``), renews it, and re-registers after a pycomd
    restart. With ``block=True`` (the default) serves until Ctrl-C (or
    SIGTERM, in the main thread), then unregisters and returns; with
    ``block=False`` returns the running ``Server`` at once (``stop()`` it,
    or use it in a ``with`` block)."""
    if not objects:
        raise TypeError("serve(%r) needs at least one object to serve" % service)
    interfaces = [_interface_of(obj) for obj in objects]
    server = _native.start_service(service, interfaces, ctx=ctx, bind=bind, advertise=advertise,
                                   lease=lease, workers=workers, metadata=metadata,
                                   register=register)
    if not block:
        return server
    restore = None
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        # SIGTERM (systemd's stop) unregisters too, instead of leaving the
        # record to its lease.
        def _term(signum, frame):
            raise KeyboardInterrupt

        restore = signal.signal(signal.SIGTERM, _term)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    return server


__all__ = ["interface", "method", "serve"]
