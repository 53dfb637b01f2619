"""`memoryd/server/` is a one-way chain: no import cycle, ``TYPE_CHECKING`` imports counted."""

from __future__ import annotations

import grimp

PACKAGE = "memoryd.server"


def _server_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("memoryd", exclude_type_checking_imports=False)
    modules = {m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + ".")}
    return {
        m: {d for d in graph.find_modules_directly_imported_by(m) if d in modules} for m in modules
    }


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return found


def test_the_server_package_has_no_import_cycle() -> None:
    assert _cycles(_server_graph()) == []


def test_type_checking_imports_are_counted() -> None:
    # keys.py imports SocketServer only under TYPE_CHECKING: the graph must still see it.
    assert "memoryd.server.sockets" in _server_graph()["memoryd.server.keys"]


def test_a_cycle_would_be_found() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]


def test_the_hub_knows_nothing_of_sockets_or_redis() -> None:
    # The core of the chain: the hub sees sockets and other nodes only through its protocols.
    assert _server_graph()["memoryd.server.hub"] == {"memoryd.server.outbound"}
