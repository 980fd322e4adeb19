"""An unmodified PyCOM 0.3.2 service with two interfaces.

Usage: pycom_service.py NAMESERVER ADDRESS SERVICE
It registers both interfaces with the nameserver (one register call each,
as PyCOM 0.3 does, without a lease) and serves until killed.
"""

import sys

import pycom


@pycom.interface("com.example.calc")
class Calc(object):
    @pycom.method("add")
    def add(self, request):
        return request.args["a"] + request.args["b"]

    @pycom.method("fail")
    def fail(self, request):
        raise pycom.BadRequest("fail was asked to fail")


@pycom.interface("com.example.echo")
class Echo(object):
    @pycom.method("echo")
    def echo(self, request):
        return request.args


if __name__ == "__main__":
    nameserver, address, service = sys.argv[1:4]
    pycom.configure(nameserver=nameserver, address=address, service=service)
    pycom.main()
