"""What `abistamp build` shows while variants build: the compile step each is at, and its time.

A variant's whole output goes to its log file; this module reads the new part of each running
variant's log every half second for the last compile step it reached: ninja's `[n/m]` (with the
file of that step; ninja writing to a file prints a step when it finishes) or setuptools'
`building '...' extension`. On a terminal, one line per
running variant is rewritten in place below the messages; elsewhere (CI logs, pipes) a plain
line per variant is printed every :data:`PLAIN_EVERY` seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import IO

#: Seconds between two plain progress lines of one variant (CI logs).
PLAIN_EVERY = 30.0
#: Seconds between two redraws on a terminal.
TTY_EVERY = 0.5

_NINJA = re.compile(r"^\[(\d+)/(\d+)\]\s+(.*)$")
_EXTENSION = re.compile(r"building '([^']+)' extension")
_SOURCES = (".cu", ".cpp", ".cc", ".cxx", ".c", ".hip", ".S")
_READ_LIMIT = 1 << 20  # a step line is near the end; never read more than this per poll


@dataclasses.dataclass
class _Running:
    log: Path
    started: float
    offset: int = 0
    extension: str = ""
    step: str = ""
    last_plain: float = 0.0


def compile_step(lines: list[str], extension: str = "", step: str = "") -> tuple[str, str]:
    """The extension and the ninja step the last of these log lines reached."""
    for line in lines:
        m = _EXTENSION.search(line)
        if m:
            extension, step = m.group(1), ""
            continue
        m = _NINJA.match(line.strip())
        if m:
            step = f"[{m.group(1)}/{m.group(2)}] {_subject(m.group(3).split())}".rstrip()
    return extension, step


def _subject(words: list[str]) -> str:
    """What a compile or link command works on: its source file, else its output, else the
    command itself."""
    words = [w.strip("'\"") for w in words]
    for word in words:
        if word.endswith(_SOURCES) and not word.startswith("-"):
            return os.path.basename(word)
    for flag, word in itertools.pairwise(words):
        if flag == "-o":
            return os.path.basename(word)
    return os.path.basename(words[0]) if words else ""


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """The progress display of one `abistamp build` run, shared by its build threads."""

    def __init__(self, stream: IO[str], width: int, tty: bool | None = None,
                 plain_every: float = PLAIN_EVERY) -> None:
        self.stream = stream
        self.width = width
        if tty is None:
            tty = stream.isatty() and os.environ.get("TERM", "") not in ("", "dumb")
        self.tty = tty
        self.plain_every = plain_every
        self.lock = threading.Lock()
        self.running: dict[str, _Running] = {}
        self.shown = 0  # status lines now on the terminal, below the messages
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    # --- called by the build threads ---------------------------------------------------------

    def start(self, name: str, log: Path) -> None:
        with self.lock:
            now = time.monotonic()
            self.running[name] = _Running(log, now, last_plain=now)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="abistamp-progress",
                                               daemon=True)
                self.thread.start()

    def finish(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)
            if self.tty:
                self._draw()

    def say(self, line: str) -> None:
        """A message line; on a terminal the status lines move below it."""
        with self.lock:
            if self.tty:
                self._clear()
            self.stream.write(line + "\n")
            if self.tty:
                self._draw()
            self.stream.flush()

    def close(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        with self.lock:
            if self.tty:
                self._clear()
                self.stream.flush()

    # --- the display thread ------------------------------------------------------------------

    def _loop(self) -> None:
        every = TTY_EVERY if self.tty else min(TTY_EVERY * 4, self.plain_every)
        while not self.stop_event.wait(every):
            with self.lock:
                for running in self.running.values():
                    self._read(running)
                if self.tty:
                    self._draw()
                else:
                    self._plain()
                self.stream.flush()

    def _read(self, running: _Running) -> None:
        try:
            with open(running.log, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size <= running.offset:
                    return
                start = max(running.offset, size - _READ_LIMIT)
                f.seek(start)
                data = f.read(size - start)
        except OSError:
            return
        # Only whole lines: a line being written is read again on the next poll.
        cut = data.rfind(b"\n")
        if cut < 0:
            return
        running.offset = start + cut + 1
        lines = data[:cut].decode("utf-8", errors="replace").splitlines()
        running.extension, running.step = compile_step(lines, running.extension, running.step)

    def _status(self, name: str, running: _Running) -> str:
        what = " ".join(filter(None, [f"building '{running.extension}'"
                                      if running.extension else "", running.step]))
        return (f"abistamp: [{name.ljust(self.width)}] {what or 'preparing'}, "
                f"{elapsed(time.monotonic() - running.started)}")

    def _plain(self) -> None:
        now = time.monotonic()
        for name, running in self.running.items():
            if now - running.last_plain >= self.plain_every:
                running.last_plain = now
                self.stream.write(self._status(name, running) + "\n")

    def _clear(self) -> None:
        if self.shown:
            # Up to the first status line, then erase to the end of the screen.
            self.stream.write(f"\x1b[{self.shown}F\x1b[J")
            self.shown = 0

    def _draw(self) -> None:
        self._clear()
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = shutil.get_terminal_size((100, 24)).columns
        for name, running in self.running.items():
            # Cut to the terminal's width: a wrapped line would break the cursor arithmetic.
            self.stream.write(self._status(name, running)[:max(20, columns - 1)] + "\n")
            self.shown += 1
