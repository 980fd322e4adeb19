"""The type stubs name everything the native module has, and nothing else."""

import ast
from pathlib import Path

import pycom_client
from pycom_client import _native


def stub_names():
    tree = ast.parse((Path(pycom_client.__file__).parent / "_native.pyi").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_stubs_match_the_native_module():
    public = {n for n in dir(_native) if not n.startswith("_")}
    assert public == stub_names() - {"JSON", "BinaryLike"}


def test_the_package_exports_what_it_lists():
    for name in pycom_client.__all__:
        assert hasattr(pycom_client, name), name
    assert (Path(pycom_client.__file__).parent / "py.typed").exists()
