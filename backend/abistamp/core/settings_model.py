"""How a settings group is declared, converted and read.

A settings group is a frozen dataclass; a field is a setting when its metadata comes from
:func:`about`. Everything about a setting is in its field: the name gives the key
(`local_version` is `local-version`, `-C abistamp.local-version`, `ABISTAMP_LOCAL_VERSION`); the
type annotation gives the conversion and the choices (`bool`, `str`, `Literal["auto", "never"]`,
or `Annotated[T, convert]` for a type with its own converter); the field's default is the
default (none: the key is required), and `about()` gives the documentation.
:func:`fields_of` turns a group into :class:`Field` records, which the sources, the messages and
the generated docs read.

Values come from sources, given highest first to :func:`read_sources`: the environment
(:class:`EnvSource`), PEP 517 config settings (:class:`ConfigSource`) and a TOML table
(:class:`TomlSource`). Each remembers where a value came from, for messages, and refuses unknown
keys the same way (:func:`known_field`, with a suggestion from :func:`did_you_mean`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

from .errors import AbistampError

ENV_PREFIX = "ABISTAMP_"
CONFIG_PREFIX = "abistamp."

#: What a frontend passes as config settings (pyproject-hooks: keyword values through JSON).
ConfigSettings = Mapping[str, "str | list[str] | None"]


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a value was read, as messages name it: "`tool.abistamp.pin` in `pyproject.toml`",
    "config setting `abistamp.pin`", "environment variable `ABISTAMP_PIN`"."""

    text: str
    key: str  # the setting's key, `runs-on`
    dotted: str = ""  # a TOML value's full name, for the tables nested in it
    file: str = ""  # the TOML file

    def __str__(self) -> str:
        return self.text


#: A converter: the raw value and where it was read, to the value (or an AbistampError).
Converter = Callable[[Any, Location], Any]


def about(doc: str, *, example: str = "", not_a_config_setting: str = "") -> dict[str, str]:
    """The metadata that makes a dataclass field a setting: its documentation, an `example`
    TOML value for the docs and messages, and, for a key that `-C` may not set, why not (the
    rest of the message "config setting `abistamp.KEY` ...")."""
    return {"doc": doc, "example": example, "not_a_config_setting": not_a_config_setting}


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting of a group, as sources, messages and docs see it."""

    attr: str
    type: Any  # the resolved annotation
    default: Any  # dataclasses.MISSING when the key is required
    doc: str
    example: str = ""
    not_a_config_setting: str = ""

    @property
    def key(self) -> str:
        return self.attr.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace("-", "_")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else ()


def fields_of(group: type) -> tuple[Field, ...]:
    """The settings of a group, in declared order: its fields described by :func:`about`."""
    hints = typing.get_type_hints(group, include_extras=True)
    out = []
    for f in dataclasses.fields(group):
        if "doc" not in f.metadata:
            continue  # not a setting (`origins`, an accelerator's name): no about()
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        out.append(Field(f.name, hints[f.name], default, f.metadata["doc"],
                         f.metadata["example"], f.metadata["not_a_config_setting"]))
    return tuple(out)


# --- conversion, from the field's type ----------------------------------------------------

def convert(field: Field, raw: Any, where: Location) -> Any:
    """`raw` as the field's type says: its own converter (`Annotated[T, convert]`), one of
    the choices (`Literal`), a boolean or a string."""
    if typing.get_origin(field.type) is Annotated:
        converter: Converter = field.type.__metadata__[0]
        return converter(raw, where)
    if field.choices:
        return _choice(field.choices, raw, where)
    if field.type is bool:
        return _boolean(raw, where)
    if field.type is str:
        return _string(raw, where)
    raise TypeError(f"no conversion for `{field.key}` of type {field.type!r}")


def wrong(raw: Any, where: Location, expected: str) -> AbistampError:
    """The error for a value of the wrong kind: "... must be {expected}, found {raw!r}"."""
    return AbistampError(f"{where} must be {expected}, found {raw!r}", f"set it to {expected}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(raw: Any, where: Location) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise wrong(raw, where, "a boolean (true or false)")


def _choice(choices: tuple[str, ...], raw: Any, where: Location) -> str:
    value = str(raw).lower() if isinstance(raw, bool) else raw  # TOML's `ninja = true`
    if not isinstance(value, str) or value not in choices:
        raise wrong(raw, where, "one of " + ", ".join(f"`{c}`" for c in choices))
    return value


def _string(raw: Any, where: Location) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):  # `build-number = 2` is fine
        raise wrong(raw, where, "a string")
    return str(raw).strip()


# --- the sources --------------------------------------------------------------------------

class Source(Protocol):
    def items(self, fields: Sequence[Field]) -> Iterator[tuple[Field, Any, Location]]:
        """Each value the source holds: its field, the raw value, where it was read. Raises
        AbistampError for a key that no field has."""


def known_field(fields: Mapping[str, Field], name: str, what: str, otherwise: str,
                prefix: str = "") -> Field:
    """The field called `name`, or the error every source gives for an unknown key: "unknown
    {what}" (which names the key and its source once), then the closest known name, else
    `otherwise`."""
    if name in fields:
        return fields[name]
    raise AbistampError(f"unknown {what}", did_you_mean(name, fields, otherwise, prefix))


def did_you_mean(given: str, known: Iterable[str], otherwise: str, prefix: str = "",
                 suffix: str = "") -> str:
    """The fix for an unknown name: the closest known one (`did you mean ...?`), else
    `otherwise`. The one place every "unknown key" message gets its suggestion from."""
    hint = difflib.get_close_matches(given, list(known), n=1)
    return f"did you mean `{prefix}{hint[0]}{suffix}`?" if hint else otherwise


@dataclasses.dataclass(frozen=True)
class TomlSource:
    """A TOML table: `[tool.abistamp]`, or one nested in it."""

    table: Mapping[str, Any]
    dotted: str  # the table's full name: "tool.abistamp"
    file: str = "pyproject.toml"
    listed_as: str = "known keys"  # how the fix lists the keys when none is close

    def items(self, fields: Sequence[Field]) -> Iterator[tuple[Field, Any, Location]]:
        by_key = {f.key: f for f in fields}
        for key, raw in self.table.items():
            dotted = f"{self.dotted}.{key}"
            field = known_field(by_key, key, f"key `{dotted}` in `{self.file}`",
                                f"{self.listed_as}: {', '.join(by_key)}")
            yield field, raw, Location(f"`{dotted}` in `{self.file}`", key, dotted, self.file)


@dataclasses.dataclass(frozen=True)
class ConfigSource:
    """PEP 517 config settings named `abistamp.KEY`; the frontend's others are not ours. A key
    given more than once (a list) takes the last value."""

    config: ConfigSettings | None
    table: str  # where a key that is not a config setting goes instead: "tool.abistamp"

    def items(self, fields: Sequence[Field]) -> Iterator[tuple[Field, Any, Location]]:
        by_key = {f.key: f for f in fields}
        for name, raw in (self.config or {}).items():
            if not name.startswith(CONFIG_PREFIX):
                continue
            where = f"config setting `{name}`"
            field = known_field(by_key, name[len(CONFIG_PREFIX):], where,
                                "known settings: " + ", ".join(CONFIG_PREFIX + k for k in by_key),
                                CONFIG_PREFIX)
            if field.not_a_config_setting:
                raise AbistampError(f"{where} {field.not_a_config_setting}",
                                    f"set `{self.table}.{field.key}` in pyproject.toml or "
                                    f"`{field.env}`")
            if isinstance(raw, list):
                if not raw:
                    raise AbistampError(f"{where} was given an empty list",
                                        f"pass `-C {name}=VALUE`")
                raw = raw[-1]
            if raw is None:
                raise AbistampError(f"{where} was given no value", f"pass `-C {name}=VALUE`")
            yield field, raw, Location(where, field.key)


@dataclasses.dataclass(frozen=True)
class EnvSource:
    """Environment variables named `ABISTAMP_KEY`; every one of them must be a setting."""

    environ: Mapping[str, str]

    def items(self, fields: Sequence[Field]) -> Iterator[tuple[Field, Any, Location]]:
        by_env = {f.env: f for f in fields}
        for name, raw in self.environ.items():
            if not name.startswith(ENV_PREFIX):
                continue
            where = f"environment variable `{name}`"
            field = known_field(by_env, name, where,
                                f"unset it; known ones are {', '.join(sorted(by_env))}")
            yield field, raw, Location(where, field.key)


def read_sources(fields: Sequence[Field], sources: Sequence[Source]
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of `fields` from `sources`, listed highest first, and where each came from
    (attr -> "environment variable `ABISTAMP_PIN`"), both by attribute name.

    Every source is read and checked in full, lowest first, so that a mistake is reported even
    where a higher source overrides it; the highest source that has a key wins.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for source in reversed(sources):
        for field, raw, where in source.items(fields):
            values[field.attr] = convert(field, raw, where)
            origins[field.attr] = str(where)
    return values, origins
