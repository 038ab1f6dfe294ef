"""docs/configuration.md is generated from Config, and must be what it generates now."""

from __future__ import annotations

from pathlib import Path

import attrs

from realtime import Config
from realtime._config import read_config_file
from realtime._reference import SECTIONS, configuration_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == configuration_reference(), (
        "docs/configuration.md is stale: run `make docs` and commit it"
    )


def test_it_lists_every_setting_with_its_flag_variable_and_help() -> None:
    text = configuration_reference()
    for field in attrs.fields(Config):
        flag = field.name.replace("_", "-")
        assert f"| `--{flag}` | `REALTIME_{field.name.upper()}` |" in text
        assert field.metadata["help"].replace("|", "\\|").replace("*", "\\*") in text


def test_every_section_opens_at_a_setting() -> None:
    names = [field.name for field in attrs.fields(Config)]
    assert names[0] == SECTIONS[0][0]
    assert [name for name, _ in SECTIONS] == sorted((name for name, _ in SECTIONS), key=names.index)


def test_its_example_file_holds_only_settings(tmp_path: Path) -> None:
    text = configuration_reference()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "gateway.toml"
    path.write_text(example)
    assert read_config_file(path)["log_format"] == "json"
