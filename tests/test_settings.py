"""The settings model: sources, precedence, types, and the errors for bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from abistamp.core.errors import AbistampError
from abistamp.core.settings import FIELDS, Settings, reference_markdown

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_defaults_without_pyproject(tmp_path: Path) -> None:
    s = Settings.load(tmp_path, None, {})
    assert (s.local_version, s.label, s.pin, s.build_number) == (
        "auto", "pt{major}{minor}{accelerator}", "auto", "1")
    assert s.backend == "setuptools.build_meta:__legacy__"


def test_precedence_env_over_config_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path, '[tool.abistamp]\npin = "minor"\nlocal-version = "never"\njobs = 3\n')
    s = Settings.load(tmp_path, {"abistamp.pin": "exact", "abistamp.jobs": ["1", "4"]},
                      {"ABISTAMP_PIN": "none"})
    assert s.pin == "none"  # env wins
    assert s.local_version == "never"  # only in pyproject
    assert s.jobs == "4"  # config setting beats pyproject; a repeated -C takes the last
    assert "ABISTAMP_PIN" in s.origin("pin")


def test_other_config_settings_are_ignored(tmp_path: Path) -> None:
    s = Settings.load(tmp_path, {"--build-option": ["--foo"], "editable_mode": "compat"}, {})
    assert s.pin == "auto"


def test_booleans_accept_toml_and_strings(tmp_path: Path) -> None:
    write(tmp_path, "[tool.abistamp]\nbuild-tag = false\n")
    assert Settings.load(tmp_path, None, {}).build_tag is False
    assert Settings.load(tmp_path, None, {"ABISTAMP_BUILD_TAG": "yes"}).build_tag is True


@pytest.mark.parametrize(
    ("pyproject", "config", "env", "message"),
    [
        ('[tool.abistamp]\nlocal-versoin = "auto"\n', None, {},
         "did you mean `local-version`"),
        ("", {"abistamp.pinn": "exact"}, {}, "did you mean `abistamp.pin`"),
        ("", None, {"ABISTAMP_LABLE": "x"}, "did you mean `ABISTAMP_LABEL`"),
        ('[tool.abistamp]\npin = "major"\n', None, {}, "`tool.abistamp.pin`"),
        ("[tool.abistamp]\nbuild-tag = 3\n", None, {}, "a boolean"),
        ('[tool.abistamp]\nbuild-number = "a1"\n', None, {}, "digits only"),
        ("", {"abistamp.build-number": "1-2"}, {}, "digits only"),
        ('[tool.abistamp]\nlabel = "pt{major}{minor}-{accelerator}"\n', None, {},
         "not a PEP 440 local version label"),
        ('[tool.abistamp]\nlabel = "pt{majr}"\n', None, {}, "did you mean `{major}`"),
        ('[tool.abistamp]\nlabel = "pt{major"\n', None, {}, "not a valid template"),
        ('[tool.abistamp]\nlabel = "_{major}"\n', None, {}, "not a PEP 440 local"),
        ('[tool.abistamp]\ntorch = "torch>>2"\n', None, {}, "not a valid requirement"),
        ('[tool.abistamp]\ntorch = "numpy==2.0"\n', None, {}, "names `numpy`, not torch"),
        ("", {"abistamp.jobs": "0"}, {}, "a positive number"),
        ("", {"abistamp.ninja": "maybe"}, {}, "`true`"),
        ("", {"abistamp.backend": "x:y"}, {}, "cannot choose the wrapped backend"),
        ("", {"abistamp.pin": None}, {}, "was given no value"),
        ("[tool.abistamp]\npin = [1]\n", None, {}, "one of"),
        ("[tool.abistamp\n", None, {}, "is not valid TOML"),
        ("[tool]\nabistamp = 3\n", None, {}, "is not a table"),
    ],
)
def test_bad_settings(tmp_path: Path, pyproject: str, config: dict | None, env: dict,
                      message: str) -> None:
    write(tmp_path, pyproject)
    with pytest.raises(AbistampError) as exc:
        Settings.load(tmp_path, config, env)
    assert message in str(exc.value)
    assert exc.value.fix, "every settings error says how to fix it"


def test_docs_reference_is_generated_from_the_model() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    assert reference_markdown() in text, (
        "docs/configuration.md is out of date: regenerate its table with "
        "`python -m abistamp.core.settings`")
    for f in FIELDS:
        assert f"`{f.env}`" in text


def test_one_model_gives_keys_defaults_and_docs(tmp_path: Path) -> None:
    """Every field of `Settings` is a documented setting, and the defaults the docs show are
    the ones a build gets."""
    assert [f.attr for f in FIELDS] == \
        [f.name for f in dataclasses.fields(Settings) if f.name != "origins"]
    assert all(f.doc and not f.required for f in FIELDS)
    s = Settings.load(tmp_path, None, {})
    for f in FIELDS:
        assert getattr(s, f.attr) == f.default, f.key
        assert s.origin(f.attr) == f"the default of `{f.key}`"


@pytest.mark.parametrize(
    ("pyproject", "config", "env", "message", "fix"),
    [
        ('[tool.abistamp]\nlocal-versoin = "auto"\n', None, {},
         "unknown key `tool.abistamp.local-versoin` in `pyproject.toml`",
         "did you mean `local-version`?"),
        ("", {"abistamp.lable": "x"}, {}, "unknown config setting `abistamp.lable`",
         "did you mean `abistamp.label`?"),
        ("", None, {"ABISTAMP_LABLE": "x"}, "unknown environment variable `ABISTAMP_LABLE`",
         "did you mean `ABISTAMP_LABEL`?"),
    ],
)
def test_unknown_keys_name_their_source_once(tmp_path: Path, pyproject: str,
                                             config: dict | None, env: dict, message: str,
                                             fix: str) -> None:
    """One source, named once, in the same shape for the three of them."""
    write(tmp_path, pyproject)
    with pytest.raises(AbistampError) as exc:
        Settings.load(tmp_path, config, env)
    assert exc.value.problem == message
    assert exc.value.fix == fix
