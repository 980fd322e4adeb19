"""PyCOM 0.4.2's proxy client calling a workflow hosted by pycomd.

Usage: pycom04_workflow.py NAMESERVER
The proxy locates the workflow by its interface, reads its introspection
(one method per task) and calls a task with keyword arguments. Exits 0
and prints ALL OK when every check holds.
"""

import sys

import pycom04_compat  # noqa: F401 (before pycom: inspect.getargspec)
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
