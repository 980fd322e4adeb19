"""Make the installed PyCOM 0.6.0 (from PyPI) importable on Python 3.7+.

Usage: PYTHON patch_pycom06.py   (run with the venv's own interpreter)

PyCOM 0.6.0 was written for Python 2.6-3.2. Three mechanical edits, and
nothing else, let it run on Python 3.11 with tornado 6:
- its module `zerojson/async.py` is renamed `async_.py` (`async` is a
  keyword since Python 3.7) and its three importers follow;
- `inspect.getargspec` (removed in 3.11) becomes `inspect.getfullargspec`,
  whose `args` and `defaults` are the same;
- tornado's `PeriodicCallback` is made without the `io_loop` argument
  (removed in tornado 5; its third positional is now `jitter`).

Idempotent: an edit already made is skipped. Fails loudly (exit 1) when an
edit neither applies nor is already there, i.e. the package is not 0.6.0.
"""

import importlib.metadata
import importlib.util
import os
import sys

VERSION = "0.6.0"

# (package, file, old text, new text, occurrences of old text in the original)
EDITS = [
    ("zerojson", "__init__.py", "from .async import (", "from .async_ import (", 1),
    ("zerojson", "common.py",
     "from . import async, constants, exceptions, utils",
     "from . import async_, constants, exceptions, utils", 1),
    ("zerojson", "common.py", "isinstance(response, async.Future)",
     "isinstance(response, async_.Future)", 1),
    ("zerojson", "server.py",
     "from . import async, call, common, constants, eventloop, utils",
     "from . import async_, call, common, constants, eventloop, utils", 1),
    ("zerojson", "server.py", ", async.Future)", ", async_.Future)", 2),
    ("zerojson", "eventloop.py",
     "zmq_ioloop.PeriodicCallback(callback, timeout, ioloop())",
     "zmq_ioloop.PeriodicCallback(callback, timeout)", 1),
    ("pycom", "interfaces.py", "inspect.getargspec(wrapped)",
     "inspect.getfullargspec(wrapped)", 1),
]


def fail(message):
    sys.stderr.write("patch_pycom06: %s\n" % message)
    sys.exit(1)


def package_dir(name):
    """The installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        fail("package %r is not installed in %s" % (name, sys.prefix))
    return list(spec.submodule_search_locations)[0]


def rename_async(zerojson):
    old = os.path.join(zerojson, "async.py")
    new = os.path.join(zerojson, "async_.py")
    if os.path.exists(old):
        # Fresh install, or a reinstall over a patched one: async.py wins.
        os.replace(old, new)
        print("patch_pycom06: renamed zerojson/async.py -> async_.py")
    elif not os.path.exists(new):
        fail("neither %s nor %s exists" % (old, new))


def edit(path, old, new, count):
    with open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    found = text.count(old)
    if found == 0 and new in text:
        return False  # already made
    if found != count:
        fail("%s: expected %d x %r, found %d (and no %r): not PyCOM %s?"
             % (path, count, old, found, new, VERSION))
    with open(path, "wt", encoding="utf-8") as f:
        f.write(text.replace(old, new))
    return True


def main():
    installed = importlib.metadata.version("pycom")
    if installed != VERSION:
        fail("pycom %s is installed, these edits are for %s" % (installed, VERSION))
    dirs = {name: package_dir(name) for name in ("pycom", "zerojson")}
    rename_async(dirs["zerojson"])
    made = 0
    for package, name, old, new, count in EDITS:
        if edit(os.path.join(dirs[package], name), old, new, count):
            print("patch_pycom06: %s/%s: %r -> %r" % (package, name, old, new))
            made += 1
    # Leftover references would fail at import; say so here instead.
    for package, name in [("zerojson", "__init__.py"), ("zerojson", "common.py"),
                          ("zerojson", "server.py"), ("zerojson", "eventloop.py"),
                          ("pycom", "interfaces.py")]:
        path = os.path.join(dirs[package], name)
        with open(path, "rt", encoding="utf-8") as f:
            source = f.read()
        try:
            compile(source, path, "exec")
        except SyntaxError as err:
            fail("%s still does not compile: %s" % (path, err))
        if "getargspec(" in source.replace("getfullargspec(", ""):
            fail("%s still calls inspect.getargspec" % path)
    print("patch_pycom06: PyCOM %s in %s: %d edits made, the rest already there"
          % (VERSION, sys.prefix, made))


if __name__ == "__main__":
    main()
