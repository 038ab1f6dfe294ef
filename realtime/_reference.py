"""docs/configuration.md, generated from :class:`Config`: every setting with its flag,
variable, TOML key, type, default and help, in the class's order.

``make docs`` (``python -m realtime._reference > docs/configuration.md``) writes it;
tests/realtime/test_reference.py fails while the file differs from what this module
renders, so a setting added, renamed or re-documented in ``Config`` shows up in the
reference in the same change. The help texts are ``Config``'s own: the file holds no
second copy to drift.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import attrs

from ._config import CONFIG_VARIABLE, ENV_PREFIX, Config, setting_type
from ._feed import FEED_SETTINGS

#: Section headings, each before the setting that opens it; a setting added later
#: joins the section of the setting before it.
SECTIONS: Final = (
    ("host", "Listening"),
    ("max_message_size", "Limits per connection and per process"),
    ("connect_rate", "Per source IP"),
    ("shutdown_grace", "Shutdown and the write path"),
    ("symbols", "The simulated market"),
    ("feed", "Feeds"),
    ("bus", "A cluster on Redis"),
    ("api_key", "The HTTP API"),
    ("jwt_secret", "Authentication and origins"),
    ("certfile", "TLS"),
    ("log_file", "Logs"),
)

_TYPES: Final = {
    bool: "true/false",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
}

_HEADER: Final = f"""\
# Configuration reference

<!-- Generated from realtime.Config by `make docs`: edit Config, not this file.
     tests/realtime/test_reference.py fails while this file is stale. -->

Every setting of `realtime serve` can be given three ways, and the first that is
given wins:

1. a **flag**: `--max-connections 1000`;
2. an **environment variable**: `{ENV_PREFIX}MAX_CONNECTIONS=1000`;
3. a **TOML file** named by `--config FILE` (or `{CONFIG_VARIABLE}=FILE`), whose keys
   are the flags without their dashes: `max-connections = 1000`.

A setting given none of these ways has the default below. So a file can hold a
deployment's settings, the environment a secret or a per-host value, and a flag a
one-off change. Every value is checked at start, wherever it came from; a bad one
stops `realtime serve` with one line naming the setting and exit status 2
([docs/gateway.md](gateway.md#start-up-errors-one-line-naming-the-setting)).

**Values.** On the command line and in the environment every value is text:
`true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), numbers, strings; a bare
switch (`--insecure-no-auth`) means true. In the file values have TOML's types: `port =
8000`, `tick-rate = 2.5` (or `2`), `feeds = false`, `host = "0.0.0.0"`, paths as
strings. A key that is no setting, or a value of another type, is refused, naming
the key; there are no sections. Relative paths, in the file too, are relative to the
working directory, as on the command line: a service should give absolute ones.

**Secrets** (`jwt-secret`, `api-key`, a password in `bus`) belong in the environment
or in a file only the gateway's user can read (`chmod 600`), never in a flag: flags
show in the process list.

```toml
# /etc/realtime/gateway.toml
host = "0.0.0.0"
port = 8000
forwarded-allow-ips = "127.0.0.1"
jwks = "/etc/realtime/jwks.json"
allowed-origins = "https://app.example.com"
log-format = "json"
```

```sh
REALTIME_API_KEY="$(cat /etc/realtime/api-key)" realtime serve --config /etc/realtime/gateway.toml
```

`realtime feed` (the producers of a cluster) takes `--config` and, of the settings
below, {", ".join(f"`{name.replace('_', '-')}`" for name in FEED_SETTINGS)}.

Defaults: *unset* means the setting is off or absent until given."""


def _default(field: attrs.Attribute[Any]) -> str:
    value = field.default
    if value is None:
        return "*unset*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: a ``|`` would end it, a ``*`` start emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*")


def configuration_reference() -> str:
    """The text of docs/configuration.md."""
    starts = dict(SECTIONS)
    lines = [_HEADER]
    for field in attrs.fields(Config):
        section = starts.get(field.name)
        if section is not None:
            lines += [
                "",
                f"## {section}",
                "",
                "| flag (the TOML key without `--`) | variable | type | default | what it sets |",
                "| --- | --- | --- | --- | --- |",
            ]
        flag = field.name.replace("_", "-")
        lines.append(
            f"| `--{flag}` | `{ENV_PREFIX}{field.name.upper()}` | "
            f"{_TYPES[setting_type(field.name)]} | {_default(field)} | "
            f"{_cell(field.metadata['help'])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(configuration_reference())
