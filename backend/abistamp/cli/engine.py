"""The build engine of `abistamp build`: which variants to build (a key already in the
wheelhouse manifest is skipped), building them a few at a time, each in a work folder of its
own that is locked (two runs that want the same variant build it once) and logged, and an
interrupt (Ctrl-C, SIGTERM) that ends every build. One variant's steps are variant_build.py's."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO, Any

from abistamp.core.atomic import file_lock
from abistamp.core.errors import AbistampError
from abistamp.core.process import cpu_count

from .progress import Progress
from .runner import Processes, find_uv
from .sources import Source
from .variant_build import VariantBuild
from .variants import BuildFailed, Cancelled, Outcome, Plan, Say, Variant, variant_key


class Matrix:
    """One run over a plan's variants; `run` gives each variant's outcome, in the plan's order."""

    def __init__(self, plan: Plan, say: Say, progress: Progress | None = None) -> None:
        self.plan = plan
        self.say = say
        self.progress = progress
        self.procs = Processes()
        self.keys: dict[Variant, tuple[str, dict[str, Any]]] = {}
        self._fetch_lock = threading.Lock()
        self._uv: str | None = None
        self.interrupted = False
        self.max_jobs = "1"

    def run(self) -> list[Outcome]:
        plan = self.plan
        outcomes: dict[Variant, Outcome] = {}
        todo: list[Variant] = []
        manifest = plan.wheelhouse.load()
        for variant in plan.variants:
            self.keys[variant] = variant_key(plan, variant)
            hit = None if plan.rebuild else plan.wheelhouse.lookup(self.keys[variant][0],
                                                                   manifest)
            if hit is not None:
                outcomes[variant] = Outcome(variant, "skipped", "already in the wheelhouse", hit)
                self.say(variant, f"skipped: already in the wheelhouse ({hit['wheel']})")
            else:
                todo.append(variant)
        if todo:
            self._uv = find_uv()
            outcomes.update(self._build_all(todo))
        return [outcomes[v] for v in plan.variants]

    def _build_all(self, todo: list[Variant]) -> dict[Variant, Outcome]:
        results: dict[Variant, Outcome] = {}
        jobs = max(1, min(self.plan.jobs, len(todo)))
        self.max_jobs = str(max(1, cpu_count() // jobs))
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="abistamp-build")
        futures = {pool.submit(self._build_one, v): v for v in todo}
        restore = _sigterm_as_interrupt()
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except KeyboardInterrupt:
            self.interrupted = True
            self.say(None, "interrupted: stopping every build")
            for future in futures:
                future.cancel()
            self.procs.cancel()
            for future, variant in futures.items():
                try:
                    results[variant] = future.result()
                except BaseException:  # noqa: BLE001 - cancelled or failed on the way out
                    results[variant] = Outcome(variant, "cancelled", "interrupted")
        finally:
            restore()
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _build_one(self, variant: Variant) -> Outcome:
        """One variant in its locked work folder, its log and its outcome; never raises."""
        plan = self.plan
        key, _ = self.keys[variant]
        short = key[:16]
        start = time.monotonic()
        plan.work_root.mkdir(parents=True, exist_ok=True)
        logs = plan.work_root / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{short}.log"
        try:
            with file_lock(plan.work_root / f"{short}.lock",
                           lambda: self.say(variant, "waiting: another run is building this "
                                                     "variant")):
                hit = None if plan.rebuild else plan.wheelhouse.lookup(key)
                if hit is not None:
                    self.say(variant, f"skipped: another run built it ({hit['wheel']})")
                    return Outcome(variant, "skipped", "built by another run meanwhile", hit,
                                   time.monotonic() - start)
                entry, note = self._build_in_work(variant, short, log_path, start)
        except Cancelled:
            return Outcome(variant, "cancelled", "interrupted", None,
                           time.monotonic() - start, log_path)
        except (BuildFailed, AbistampError) as e:
            text = e.one_line() if isinstance(e, AbistampError) else str(e)
            self.say(variant, f"FAILED: {text} (log: {log_path})")
            return Outcome(variant, "failed", text, None, time.monotonic() - start, log_path)
        except Exception as e:  # noqa: BLE001 - one variant's bug must not lose the others
            text = f"{type(e).__name__}: {e}"
            self.say(variant, f"FAILED: {text} (log: {log_path})")
            return Outcome(variant, "failed", text, None, time.monotonic() - start, log_path)
        seconds = time.monotonic() - start
        self.say(variant, f"built {entry['wheel']} in {seconds:.1f} s"
                 + ("" if note == "added" else f" ({note})"))
        return Outcome(variant, "built", note, entry, seconds, log_path)

    def _build_in_work(self, variant: Variant, short: str, log_path: Path, start: float
                       ) -> tuple[dict[str, Any], str]:
        """The variant's build in a fresh work folder, removed afterwards, shown as running."""
        work = self.plan.work_root / short
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                if self.progress:
                    self.progress.start(variant.name, log_path)
                source = self._fetched_source(variant, log)
                assert self._uv is not None
                build = VariantBuild(self.plan, variant, self.keys[variant], work, log,
                                     lambda text: self.say(variant, text), self.procs,
                                     self._uv, self.max_jobs)
                return build.run(source, start)
        finally:
            if self.progress:
                self.progress.finish(variant.name)
            shutil.rmtree(work, ignore_errors=True)

    def _fetched_source(self, variant: Variant, log: IO[str]) -> Source:
        """A requirement's sdist, fetched once per run (the first variant does it; the others
        wait) through the simple repository API: none of the project's code runs (fetch.py)."""
        from .fetch import default_cache_dir, fetch_sdist
        from .fetchconfig import fetch_config

        plan = self.plan
        if plan.source.kind != "requirement" or plan.source.path is not None:
            if plan.source.url:
                log.write(f"abistamp: {plan.source.spec} from {plan.source.url} "
                          f"({plan.source.digest}; {plan.source.checked})\n")
            return plan.source
        with self._fetch_lock:
            if plan.source.path is None:
                self.say(variant, f"fetching the sdist of {plan.source.spec}")

                def note(text: str) -> None:
                    log.write(f"abistamp: {text}\n")
                    log.flush()
                    if text.startswith("WARNING"):
                        self.say(variant, text)

                config = fetch_config(plan.index_url, plan.extra_index_urls, plan.find_links)
                got = fetch_sdist(plan.source.spec, config,
                                  plan.cache_dir or default_cache_dir(), note)
                plan.source = dataclasses.replace(plan.source, path=got.path,
                                                  digest="sha256:" + got.sha256, url=got.url,
                                                  checked=got.checked)
        return plan.source


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Let SIGTERM stop the builds the way Ctrl-C does (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, old)

    return restore
