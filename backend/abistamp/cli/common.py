"""What every command shares: exit codes, the parsing of `KEY=VALUE` options, stderr notes."""

from __future__ import annotations

import sys

from abistamp.core.errors import AbistampError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def parse_pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise AbistampError(f"`{option} {value}` is not of the form KEY=VALUE",
                                f"write it as `{option} NAME=VALUE`")
        out[key.strip()] = val
    return out


def parse_config(values: list[str]) -> dict[str, str | list[str]]:
    """`-C k=v` repeated: a list when a key repeats, as pip and build pass them."""
    out: dict[str, str | list[str]] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise AbistampError(f"`-C {value}` is not of the form KEY=VALUE",
                                "write it as `-C abistamp.label=pt{major}{minor}`")
        key = key.strip()
        if key in out:
            old = out[key]
            out[key] = [*old, val] if isinstance(old, list) else [old, val]
        else:
            out[key] = val
    return out


def say(text: str) -> None:
    print(f"abistamp: {text}", file=sys.stderr, flush=True)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
