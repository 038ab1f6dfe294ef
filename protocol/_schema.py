"""JSON Schema (draft 2020-12) of every message, generated from the classes.

The schema describes the JSON codec (the MessagePack codec carries the same fields).
It is what the TypeScript types of the browser client are generated from, so a field
renamed here breaks the browser build instead of the browser at run time.

It also carries the close codes: ``$defs/CloseCode`` (each code's name and meaning)
and the lists that make the reconnect policy, ``$defs/ReconnectCloseCode``,
``$defs/FatalCloseCode`` and ``$defs/ReauthenticateCloseCode``. The browser's constants
are generated from these, so both clients reconnect after exactly the codes
:func:`should_reconnect` names.
"""

from __future__ import annotations

import enum
import functools
import operator
import typing
from datetime import datetime
from typing import Any, Final, get_args, get_origin

import attrs

from ._codes import (
    CLOSE_CODE_MEANINGS,
    FATAL_CLOSE_CODES,
    REAUTHENTICATE_CLOSE_CODES,
    RECONNECT_CLOSE_CODES,
    CloseCode,
)
from ._messages import (
    CLIENT_MESSAGE_CLASSES,
    MAX_ID_LENGTH,
    MAX_SAFE_INTEGER,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    SERVER_MESSAGE_CLASSES,
    RequestId,
)

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_REQUEST_ID_SCHEMA: Final = {
    "description": "Echoed in the reply to this request.",
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
    ],
}


def json_schema() -> dict[str, Any]:
    """The schema document: ``$defs`` of every class, ``ClientMessage`` and ``ServerMessage``.

    The document itself accepts any one message, client or server.
    """
    defs: dict[str, Any] = {}
    for cls in MESSAGE_TYPES:
        _add_class(cls, defs)
    defs["ClientMessage"] = _one_of(CLIENT_MESSAGE_CLASSES)
    defs["ServerMessage"] = _one_of(SERVER_MESSAGE_CLASSES)
    defs |= _close_code_defs()
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"Realtime gateway wire protocol v{PROTOCOL_VERSION}",
        "description": (
            "Messages of protocol v1 in the JSON codec. Clients must ignore message types "
            "and fields they do not know: a later version of v1 may add them."
        ),
        "oneOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": defs,
    }


def _close_code_defs() -> dict[str, Any]:
    """The close codes, and the two lists a client's reconnect decision is made of."""
    return {
        "CloseCode": {
            "title": "CloseCode",
            "description": "WebSocket close codes the server sends (1006 is only reported).",
            "type": "integer",
            "oneOf": [
                {"const": int(code), "title": code.name, "description": CLOSE_CODE_MEANINGS[code]}
                for code in CloseCode
            ],
        },
        "ReconnectCloseCode": {
            "title": "ReconnectCloseCode",
            "description": (
                "Close codes after which a client reconnects, with backoff. After any other "
                "code it stops: both clients, Python and browser, follow this one list."
            ),
            "type": "integer",
            "enum": sorted(int(code) for code in RECONNECT_CLOSE_CODES),
        },
        "FatalCloseCode": {
            "title": "FatalCloseCode",
            "description": (
                "Close codes after which a client must never reconnect on its own: the same "
                "request would be refused again."
            ),
            "type": "integer",
            "enum": sorted(int(code) for code in FATAL_CLOSE_CODES),
        },
        "ReauthenticateCloseCode": {
            "title": "ReauthenticateCloseCode",
            "description": (
                "Close codes after which a client fetches a new token and reconnects once; "
                "refused again, it stops."
            ),
            "type": "integer",
            "enum": sorted(int(code) for code in REAUTHENTICATE_CLOSE_CODES),
        },
    }


def _one_of(classes: tuple[type, ...]) -> dict[str, Any]:
    return {"oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in classes]}


def _add_class(cls: type, defs: dict[str, Any]) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}  # reserve the name before recursing
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    if cls in MESSAGE_TYPES:
        properties["type"] = {"const": MESSAGE_TYPES[cls]}
        required.append("type")
    for field in attrs.fields(cls):
        field_type = hints[field.name]
        args = get_args(field_type)
        if type(None) in args:  # optional: X | None, where X may itself be a union
            field_type = functools.reduce(operator.or_, [a for a in args if a is not type(None)])
        properties[field.name] = _schema_of(field_type, field.metadata, defs)
        if field.default is attrs.NOTHING:
            required.append(field.name)
    definition: dict[str, Any] = {"type": "object", "title": cls.__name__}
    if cls.__doc__:
        definition["description"] = " ".join(cls.__doc__.split())
    definition |= {
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    defs[cls.__name__] = definition


def _schema_of(field_type: Any, metadata: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if field_type == RequestId:
        return dict(_REQUEST_ID_SCHEMA)
    schema: dict[str, Any]
    if field_type is str:
        schema = {"type": "string"}
    elif field_type is int:
        schema = {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER}
    elif field_type is float:
        schema = {"type": "number"}
    elif field_type is datetime:
        schema = {"type": "string", "format": "date-time"}
    elif isinstance(field_type, type) and issubclass(field_type, enum.Enum):
        schema = {"type": "string", "enum": [member.value for member in field_type]}
    elif get_origin(field_type) is tuple:
        item_type = get_args(field_type)[0]
        schema = {"type": "array", "items": _schema_of(item_type, metadata.get("items", {}), defs)}
        if "minItems" in metadata:
            schema["minItems"] = metadata["minItems"]
        return schema
    elif attrs.has(field_type):
        _add_class(field_type, defs)
        return {"$ref": f"#/$defs/{field_type.__name__}"}
    else:  # pragma: no cover - a new field type needs a rule here
        raise TypeError(f"no JSON Schema rule for {field_type!r}")
    for key in ("pattern", "minimum", "maximum", "minLength"):
        if key in metadata:
            schema[key] = metadata[key]
    return schema
