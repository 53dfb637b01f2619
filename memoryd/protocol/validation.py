"""Turn untrusted input (a JSON body, a query string, a socket frame) into a typed request.

Unlike a plain ``msgspec.convert``, which stops at the first problem, `parse` checks every
field and reports each one as ``{"field": "title", "message": "..."}`` so a form can show
all of them at once. A field may carry its own message through
``Meta(extra={"message": ...})``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar, get_args, get_origin

import msgspec

from memoryd.errors import ValidationFailed

T = TypeVar("T", bound=msgspec.Struct)

_AT = re.compile(r" - at `\$(.*)`$")


def _custom_message(annotation: Any) -> str | None:
    """The ``extra["message"]`` of a field's Meta, looked up through Optional/Union too."""
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        for meta in args[1:]:
            if isinstance(meta, msgspec.Meta) and meta.extra and "message" in meta.extra:
                return str(meta.extra["message"])
        return _custom_message(args[0])
    for arg in args:
        found = _custom_message(arg)
        if found:
            return found
    return None


def parse(model: type[T], data: Any, *, strict: bool = True) -> T:
    """Validate ``data`` against ``model``; raise `ValidationFailed` listing every problem.

    ``strict=False`` lets strings stand for numbers and booleans (query strings).
    """
    if not isinstance(data, dict):
        raise ValidationFailed(
            "Request body must be a JSON object",
            details=[{"field": None, "message": "expected an object"}],
        )
    fields = msgspec.structs.fields(model)
    by_wire_name = {f.encode_name: f for f in fields}
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for key in data:
        if key not in by_wire_name:
            errors.append({"field": key, "message": "is not allowed"})
    for f in fields:
        if f.encode_name not in data:
            if f.required:
                errors.append({"field": f.encode_name, "message": "is required"})
            continue
        try:
            values[f.name] = msgspec.convert(data[f.encode_name], f.type, strict=strict)
        except msgspec.ValidationError as exc:
            text = str(exc)
            match = _AT.search(text)
            where = f.encode_name + (match[1] if match else "")
            message = _custom_message(f.type) or (text[: match.start()] if match else text)
            errors.append({"field": where, "message": message})
    if errors:
        raise ValidationFailed("Validation failed", details=errors)
    try:
        return model(**values)
    except (TypeError, ValueError) as exc:  # cross-field checks in __post_init__
        raise ValidationFailed(
            "Validation failed", details=[{"field": None, "message": str(exc)}]
        ) from None
