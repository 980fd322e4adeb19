"""PyCOM 0.4.2 predates Python 3.11, which removed inspect.getargspec: give
it back before `import pycom` (the package itself stays unmodified)."""

import collections
import inspect

if not hasattr(inspect, "getargspec"):
    ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")

    def getargspec(func):
        spec = inspect.getfullargspec(func)
        return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.getargspec = getargspec
