"""The one exception type abistamp raises for problems a user can fix, and `log`, the notes a
build writes for the user on stderr."""

from __future__ import annotations

import sys


class AbistampError(Exception):
    """A problem with the input, the environment or a setting, with the fix in the message.

    Messages follow one shape: what is wrong (naming the key or file in backticks), what was
    found, and how to fix it.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)

    def one_line(self) -> str:
        """The message on one line, for the command line."""
        return f"{self.problem} (fix: {self.fix})" if self.fix else self.problem


def log(message: str) -> None:
    print(f"abistamp: {message}", file=sys.stderr, flush=True)
