"""`parse_webhook`: Meta's payload read item by item (bytes in, items out)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from memoryd.bridges.whatsapp import WebhookMalformed, parse_webhook


def _body(*changes: Any, entries: tuple[Any, ...] = ()) -> bytes:
    entry = {"id": "102290129340398", "changes": list(changes)}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [entry, *entries]}).encode()  # fmt: skip


def _change(**value: Any) -> dict[str, Any]:
    metadata = {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}
    return {"field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}  # fmt: skip


def test_every_readable_item_is_kept_and_each_unreadable_one_skipped_with_its_place() -> None:
    text = {"from": "15551234567", "id": "wamid.A", "timestamp": "1", "type": "text",
            "text": {"body": "hi"}}  # fmt: skip
    body = _body(
        _change(
            contacts=[{"profile": {"name": "Ada"}, "wa_id": "15551234567"}, {"wa_id": 7}],
            messages=[{"id": "wamid.B"}, text, "nonsense"],
            statuses=[
                {"id": "wamid.C", "status": "read", "recipient_id": "15551234567"},
                {"id": "wamid.D"},
            ],
        ),
        {"field": "account_update", "value": {}},
        {"field": "messages", "value": {"metadata": {}}},
        entries=("oops", {"changes": 3}),
    )
    delivery = parse_webhook(body)
    assert delivery.object == "whatsapp_business_account"
    kept = [(i.kind, i.id, i.state) for i in delivery.items]
    assert kept == [("message", "wamid.A", None), ("status", "wamid.C", "read")]
    message = delivery.items[0]
    assert message.raw == text and message.phone_number_id == "106540352242922"
    assert message.contact == {"profile": {"name": "Ada"}, "wa_id": "15551234567"}
    where = [reason.split(":")[0] for reason in delivery.skipped]
    assert where == [
        "entry[0].changes[0].value.messages[0]",  # no "from"
        "entry[0].changes[0].value.messages[2]",
        "entry[0].changes[0].value.statuses[1]",  # no "status"
        "entry[0].changes[1]",  # another field
        "entry[0].changes[2]",  # no phone_number_id
        "entry[1]",
        "entry[2]",
    ]


def test_only_a_body_that_is_no_json_object_is_refused_whole() -> None:
    for raw, is_json in ((b"", False), (b"{", False), (b"[1, 2]", True), (b'"x"', True)):
        with pytest.raises(WebhookMalformed) as refused:
            parse_webhook(raw)
        assert refused.value.json is is_json
    assert parse_webhook(b'{"object": "page", "entry": []}').items == []
