"""PyCOM 0.4.2's proxy client calling a workflow hosted by pycomd.

Usage: pycom04_workflow.py NAMESERVER
The proxy locates the workflow by its interface, reads its introspection
(one method per task) and calls a task with keyword arguments. Exits 0
and prints ALL OK when every check holds.
"""

import collections
import inspect
import sys

# PyCOM 0.4.2 predates Python 3.11, which removed inspect.getargspec; give
# it back (the package itself is unmodified).
if not hasattr(inspect, "getargspec"):
    ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")

    def getargspec(func):
        spec = inspect.getfullargspec(func)
        return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.getargspec = getargspec

import pycom  # noqa: E402


def main():
    ctx = pycom.ProxyContext(nameserver=sys.argv[1])
    wf = ctx.locate("demo.workflow")
    result = wf.task1(n=2)
    assert result == {"n": 30}, result
    print("workflow task1 via a PyCOM 0.4.2 proxy ->", result)
    print("ALL OK")


if __name__ == "__main__":
    main()
