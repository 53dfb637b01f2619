"""A fake Pinecone serverless index: the data-plane HTTP API on a random local port.

It answers what the ``pinecone`` SDK (10.x) sends to ``Index(host="http://127.0.0.1:PORT")``,
in the shapes of Pinecone's data-plane API reference:

- ``POST /vectors/upsert`` {vectors: [{id, values, metadata}], namespace} ->
  {upsertedCount}
- ``POST /query`` {vector, topK, namespace, filter, includeValues, includeMetadata} ->
  {matches: [{id, score, values, metadata}], namespace, usage: {readUnits}} (cosine)
- ``POST /vectors/delete`` {ids | deleteAll | filter, namespace} -> {}
- ``GET /vectors/fetch?ids=..&ids=..&namespace=..`` -> {vectors: {id: {id, values,
  metadata}}, namespace, usage}
- ``POST /describe_index_stats`` -> {namespaces: {ns: {vectorCount}}, dimension,
  indexFullness, totalVectorCount, metric, vectorType}

Every request must carry ``Api-Key`` (401 otherwise) and ``X-Pinecone-Api-Version``
(400 otherwise). Errors are ``{"code", "message", "details"}`` as Pinecone answers them.
Metadata filters support ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$and``, ``$or``, and a
bare value as ``$eq``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import base_url, serve_on_loopback


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


def _matches(meta: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    if not flt:
        return True
    for key, cond in flt.items():
        if key == "$and":
            if not all(_matches(meta, c) for c in cond):
                return False
        elif key == "$or":
            if not any(_matches(meta, c) for c in cond):
                return False
        else:
            value = meta.get(key)
            if not isinstance(cond, dict):
                cond = {"$eq": cond}
            for op, arg in cond.items():
                ok = {"$eq": lambda v, a: v == a, "$ne": lambda v, a: v != a,
                      "$in": lambda v, a: v in a, "$nin": lambda v, a: v not in a}[op]  # fmt: skip
                if not ok(value, arg):
                    return False
    return True


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return dot / (na * nb)


@dataclass
class FakePinecone:
    api_key: str = "pc-test-key"
    dimension: int = 256
    namespaces: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakePinecone:
        app = web.Application(middlewares=[self._check])
        app.router.add_post("/vectors/upsert", self._upsert)
        app.router.add_post("/query", self._query)
        app.router.add_post("/vectors/delete", self._delete)
        app.router.add_get("/vectors/fetch", self._fetch)
        app.router.add_post("/describe_index_stats", self._stats)
        app.router.add_get("/describe_index_stats", self._stats)
        self._runner = await serve_on_loopback(app)
        self.url = base_url(self._runner)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "details": []}, status=status)

    @web.middleware
    async def _check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Seen(request.method, request.path_qs, body, dict(request.headers)))
        if request.headers.get("Api-Key") != self.api_key:
            return self._error(401, 16, "Invalid API Key")
        if not request.headers.get("X-Pinecone-Api-Version"):
            return self._error(400, 3, "Missing X-Pinecone-Api-Version header")
        request["body"] = body
        return await handler(request)  # type: ignore[no-any-return]

    async def _upsert(self, request: web.Request) -> web.Response:
        body = request["body"]
        ns = self.namespaces.setdefault(body.get("namespace", ""), {})
        for v in body["vectors"]:
            if len(v["values"]) != self.dimension:
                return self._error(400, 3, f"Vector dimension {len(v['values'])} does not match "
                                   f"the dimension of the index {self.dimension}")  # fmt: skip
        for v in body["vectors"]:
            ns[v["id"]] = {"id": v["id"], "values": v["values"], "metadata": v.get("metadata")}
        return web.json_response({"upsertedCount": len(body["vectors"])})

    async def _query(self, request: web.Request) -> web.Response:
        body = request["body"]
        name = body.get("namespace", "")
        ns = self.namespaces.get(name, {})
        if len(body["vector"]) != self.dimension:
            return self._error(400, 3, "Query vector dimension does not match the index")
        scored = [
            (_cosine(body["vector"], v["values"]), v)
            for v in ns.values()
            if _matches(v.get("metadata") or {}, body.get("filter"))
        ]
        scored.sort(key=lambda sv: -sv[0])
        matches = []
        for score, v in scored[: body["topK"]]:
            match: dict[str, Any] = {
                "id": v["id"],
                "score": score,
                "values": v["values"] if body.get("includeValues") else [],
            }
            if body.get("includeMetadata") and v.get("metadata") is not None:
                match["metadata"] = v["metadata"]
            matches.append(match)
        return web.json_response({"results": [], "matches": matches, "namespace": name,
                                  "usage": {"readUnits": 1 + len(ns) // 1000}})  # fmt: skip

    async def _delete(self, request: web.Request) -> web.Response:
        body = request["body"]
        ns = self.namespaces.get(body.get("namespace", ""), {})
        if body.get("deleteAll"):
            ns.clear()
        elif "ids" in body:
            for i in body["ids"]:
                ns.pop(i, None)
        elif "filter" in body:
            for key in [
                k for k, v in ns.items() if _matches(v.get("metadata") or {}, body["filter"])
            ]:
                del ns[key]
        return web.json_response({})

    async def _fetch(self, request: web.Request) -> web.Response:
        name = request.query.get("namespace", "")
        ns = self.namespaces.get(name, {})
        ids = request.query.getall("ids", [])
        vectors = {i: ns[i] for i in ids if i in ns}
        return web.json_response({"vectors": vectors, "namespace": name,
                                  "usage": {"readUnits": 1}})  # fmt: skip

    async def _stats(self, request: web.Request) -> web.Response:
        total = sum(len(ns) for ns in self.namespaces.values())
        return web.json_response({
            "namespaces": {k: {"vectorCount": len(v)} for k, v in self.namespaces.items() if v},
            "dimension": self.dimension, "indexFullness": 0.0, "totalVectorCount": total,
            "metric": "cosine", "vectorType": "dense",
        })  # fmt: skip
