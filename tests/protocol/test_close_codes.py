"""Close codes: one reconnect policy, carried by the JSON Schema to the browser."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

import protocol as p

#: DESIGN.md: "Clients reconnect after 1001, 1006, 1011, 4499 and never after 4400,
#: 4403, 4409"; 4429 asks to reconnect after backing off.
RECONNECT = {1001, 1006, 1011, 4429, 4499}
FATAL = {4400, 4403, 4409}
#: 4401: fetch a new token and reconnect once.
REAUTHENTICATE = {4401}

_DEFS = p.json_schema()["$defs"]


def test_the_policy_is_the_designs() -> None:
    assert p.RECONNECT_CLOSE_CODES == RECONNECT
    assert p.FATAL_CLOSE_CODES == FATAL
    assert p.REAUTHENTICATE_CLOSE_CODES == REAUTHENTICATE


@pytest.mark.parametrize("code", [*p.CloseCode, 1005, 1012, 1015, 4000, 4999], ids=str)
def test_reconnect_only_after_a_reconnect_code(code: int) -> None:
    # Codes the server does not send (1005 no status, 1012 restart, ...) stop the client too.
    assert p.should_reconnect(code) is (code in RECONNECT)


def test_every_close_code_has_a_meaning() -> None:
    assert set(p.CLOSE_CODE_MEANINGS) == set(p.CloseCode)
    assert all(meaning.endswith(".") for meaning in p.CLOSE_CODE_MEANINGS.values())


def test_the_schema_names_every_close_code() -> None:
    members = _DEFS["CloseCode"]["oneOf"]
    assert [(m["const"], m["title"], m["description"]) for m in members] == [
        (int(code), code.name, p.CLOSE_CODE_MEANINGS[code]) for code in p.CloseCode
    ]


def test_the_schema_carries_the_reconnect_policy() -> None:
    assert _DEFS["ReconnectCloseCode"]["enum"] == sorted(RECONNECT)
    assert _DEFS["FatalCloseCode"]["enum"] == sorted(FATAL)
    assert _DEFS["ReauthenticateCloseCode"]["enum"] == sorted(REAUTHENTICATE)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": _DEFS})


@pytest.mark.parametrize(
    ("name", "value", "valid"),
    [
        ("CloseCode", 1000, True),
        ("CloseCode", 4499, True),
        ("CloseCode", 1234, False),
        ("CloseCode", "1000", False),
        ("ReconnectCloseCode", 1001, True),
        ("ReconnectCloseCode", 1000, False),
        ("FatalCloseCode", 4409, True),
        ("FatalCloseCode", 4401, False),
        ("ReauthenticateCloseCode", 4401, True),
        ("ReauthenticateCloseCode", 4403, False),
    ],
)
def test_the_close_code_definitions_validate(name: str, value: Any, valid: bool) -> None:
    assert _validator(name).is_valid(value) is valid
