"""The shipped package uses openenv and websockets through their public API only.

Allowed: their public modules, classes, functions, methods and properties, and the three
`EnvClient` hooks (`_step_payload`, `_parse_result`, `_parse_state`). Forbidden: importing a
private name or module of theirs, reading or writing a private attribute of any object that
is not our own, overriding or shadowing a private name of an openenv/websockets base class,
and handing websockets a connection class (`create_connection=`).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "rooms": ROOT / "__init__.py",
    **{f"rooms.{p.stem}": p for p in ROOT.glob("*.py") if p.stem != "__init__"},
    **{f"rooms.server.{p.stem}": p for p in (ROOT / "server").glob("*.py") if p.stem != "__init__"},
    "rooms.server": ROOT / "server" / "__init__.py",
    **{f"rooms.kit.{p.stem}": p for p in (ROOT / "kit").glob("*.py") if p.stem != "__init__"},
    "rooms.kit": ROOT / "kit" / "__init__.py",
}
HOOKS = {"_step_payload", "_parse_result", "_parse_state"}
FOREIGN = ("openenv", "websockets")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def foreign_private_names(cls: type) -> frozenset[str]:
    """Private names that openenv/websockets classes in `cls`'s MRO define or use on `self`."""
    names: set[str] = set()
    for base in cls.__mro__:
        if not base.__module__.startswith(FOREIGN):
            continue
        names |= {name for name in vars(base) if is_private(name)}
        tree = ast.parse(textwrap.dedent(inspect.getsource(base)))
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and is_private(node.attr)}
    return frozenset(names)


def violations(source: str, classes: dict[str, type]) -> list[str]:
    """Every use of a private openenv/websockets name in `source`, whose classes are `classes`."""
    found: list[str] = []

    def visit(node: ast.AST, owner: type | None) -> None:
        if isinstance(node, ast.ClassDef):
            owner = classes.get(node.name)
        forbidden = foreign_private_names(owner) - HOOKS if owner is not None else set()
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(FOREIGN):
            module = node.module or ""
            if any(is_private(part) for part in module.split(".")):
                found.append(f"line {node.lineno}: imports private module {module}")
            found.extend(f"line {node.lineno}: imports {alias.name}" for alias in node.names if is_private(alias.name))
        elif isinstance(node, ast.Import):
            found.extend(
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name.startswith(FOREIGN) and any(is_private(p) for p in alias.name.split("."))
            )
        elif isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in HOOKS:
            # Our own objects: `self`, `cls`, or one of the module's classes by name.
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", *classes)
            if on_self and isinstance(node.value, ast.Name) and node.value.id in classes:
                forbidden = foreign_private_names(classes[node.value.id]) - HOOKS
            if not on_self:
                found.append(f"line {node.lineno}: uses {ast.unparse(node)}")
            elif node.attr in forbidden:
                found.append(f"line {node.lineno}: uses {node.attr} of an openenv/websockets base class")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in forbidden:
            found.append(f"line {node.lineno}: overrides {node.name}")
        elif isinstance(node, ast.keyword) and node.arg == "create_connection":
            found.append(f"line {node.lineno}: passes create_connection=")
        for child in ast.iter_child_nodes(node):
            visit(child, owner)

    visit(ast.parse(source), None)
    return found


@pytest.mark.parametrize("module_name", sorted(SHIPPED))
def test_shipped_module_uses_only_public_api(module_name: str) -> None:
    module = importlib.import_module(module_name)
    classes = {
        name: obj for name, obj in vars(module).items() if inspect.isclass(obj) and obj.__module__ == module_name
    }
    assert violations(SHIPPED[module_name].read_text(encoding="utf-8"), classes) == []


def test_the_check_catches_each_kind_of_private_use() -> None:
    from openenv.core.env_client import EnvClient

    class Client(EnvClient):  # type: ignore[type-arg]
        pass

    source = textwrap.dedent(
        """
        from openenv.core.env_client import _BootstrapResult
        from openenv.core.env_server._utils import anything
        import websockets.legacy._private
        from websockets.sync.client import connect

        class Client(EnvClient):
            def _send_and_receive(self, message):
                return self._ws

            def _step_payload(self, action):
                return other._ws_url

            def _parse_result(self, payload):
                return connect("ws://x", create_connection=Mine)
        """
    )
    assert [line.split(": ", 1)[1] for line in violations(source, {"Client": Client})] == [
        "imports _BootstrapResult",
        "imports private module openenv.core.env_server._utils",
        "imports websockets.legacy._private",
        "overrides _send_and_receive",
        "uses _ws of an openenv/websockets base class",
        "uses other._ws_url",
        "passes create_connection=",
    ]
