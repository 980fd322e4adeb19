"""A PyCOM 0.6.0 service (from PyPI, with the three Python 3.11 edits of
patch_pycom06.py), using every introspection feature 0.6 has.

Usage: pycom06_service.py NAMESERVER ADDRESS SERVICE
PyCOM 0.6 has no environment variable for the nameserver: it is given with
pycom.configure(nameserver=...). pycom.main() registers the service (both
interfaces in one call, `interfaces`, no lease), re-registers every 30 s,
serves until killed, and never unregisters.
"""

import sys

import pycom


@pycom.interface("com.example.calc06")
class Calc(pycom.Service):
    """Arithmetic, PyCOM 0.6 style."""

    introspection_data = {"com.example.calc06.flavour": "python"}

    @pycom.method(results=("total",))
    def add(self, request, a, b, c=0):
        """Add a and b, and c when given."""
        return a + b + c

    @pycom.method(results=("quotient", "remainder"))
    def divmod(self, request, a, b):
        """Quotient and remainder."""
        if b == 0:
            raise pycom.BadRequest("divmod: b must not be 0")
        return divmod(a, b)


@pycom.interface("com.example.files06")
class Files(pycom.Service):
    """Attachments, PyCOM 0.6 style (at most one per message)."""

    @pycom.method(attachments=("blob", None), results=("size", "text"))
    def upload(self, request, blob):
        """Take a blob; return its size and its text."""
        return len(blob), blob.decode("utf-8")

    @pycom.method(attachments=(None, "blob"), results=("name", "blob"))
    def download(self, request, name):
        """Return a blob made from name."""
        return name, ("contents of " + name).encode("utf-8")


if __name__ == "__main__":
    nameserver, address, service = sys.argv[1:4]
    pycom.configure(nameserver=nameserver, address=address, service=service)
    pycom.main()
