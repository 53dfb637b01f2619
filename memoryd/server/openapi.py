"""The OpenAPI 3.1 document served at /api/openapi.json."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("memoryd.server").joinpath("openapi.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
