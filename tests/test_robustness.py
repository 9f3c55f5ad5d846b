"""Interruption, stale leftovers, and a build that leaves nothing behind it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from installer.sources import WheelFile

from .conftest import BACKEND, Env, run

# The real stamping, paused at one point the test names (argv[4]) until the test's signal
# arrives: when its `.part` file is made (`open`), in the k-th member copy (`copy:k`, the
# kernel's copy_file_range; the final run checks there is one per member), or with the `.part`
# written, just before the rename onto the wheel's name (`rename`). The pause is a read of
# stdin, which the test never writes to: every kill lands mid-stamp, none depends on a sleep or the machine's
# speed. The hooks are Python's own audit and profile hooks; the stamping code is unchanged.
STAMPER = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from abistamp.core.abi import TorchABI
from abistamp.core.labels import build_tag, stamped_version
from abistamp.core.record import Stamp, abi_fields
from abistamp.core.stamp import stamp_wheel
where, _, nth = sys.argv[4].partition(":")
copies = 0

def pause():
    print("paused", sys.argv[4], flush=True)
    sys.stdin.readline()
    raise SystemExit("resumed: the test never resumes a stamp")

def audit(event, args):
    # mkstemp's open creates the file; the stamp's own open (no O_CREAT) finds it there.
    if where == "open" and event == "open" and str(args[0]).endswith(".part") \
            and not args[2] & os.O_CREAT:
        pause()
    if where == "rename" and event == "os.rename" and str(args[0]).endswith(".part"):
        pause()

def profile(frame, event, arg):
    global copies
    if event == "c_call" and arg is os.copy_file_range:
        copies += 1
        if where == "copy" and copies == int(nth):
            pause()

sys.addaudithook(audit)
sys.setprofile(profile)
abi = TorchABI("2.13.0+cpu")
stamp_wheel(Path(sys.argv[1]), Path(sys.argv[2]),
            Stamp(stamped_version("1.0", "pt213cpu"), build_tag(1, "pt213cpu"),
                  ("torch==2.13.0+cpu",), abi_fields(abi)))
sys.setprofile(None)
print("copies", copies, flush=True)
"""
MEMBERS = 40


@pytest.fixture(scope="module")
def big_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of 40 incompressible members (256 KiB each): one copy call per member."""
    folder = tmp_path_factory.mktemp("big")
    wheel = folder / "big-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        rows = []
        import base64
        import hashlib

        for i in range(MEMBERS):
            data = os.urandom(256 << 10)
            zf.writestr(f"big/part{i}.bin", data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"big/part{i}.bin,sha256={digest.decode()},{len(data)}")
        zf.writestr("big-1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: big\nVersion: 1.0\n")
        zf.writestr("big-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        rows += ["big-1.0.dist-info/METADATA,,", "big-1.0.dist-info/WHEEL,,",
                 "big-1.0.dist-info/RECORD,,"]
        zf.writestr("big-1.0.dist-info/RECORD", "\n".join(rows) + "\n")
    return wheel


def stamp_proc(wheel: Path, out: Path, pause_at: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", STAMPER, str(wheel), str(out), str(BACKEND),
                             pause_at], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killing_the_stamper_never_leaves_a_partial_wheel(big_wheel: Path, tmp_path: Path,
                                                          sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT: Python unwinds) and SIGKILL (nothing runs after it) at each point of a
    stamp, from its first byte to just before the rename: never a wheel under its final name;
    after SIGINT nothing at all, after SIGKILL at most a `.part` file, which the next stamp
    into the folder removes."""
    out = tmp_path / "out"
    out.mkdir()
    for pause_at in ("open", "copy:1", f"copy:{MEMBERS // 2}", f"copy:{MEMBERS}", "rename"):
        proc = stamp_proc(big_wheel, out, pause_at)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"paused {pause_at}\n", (line, proc.communicate())
        assert [p.suffix for p in out.iterdir()] == [".part"], "the stamp is writing"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -sig, (pause_at, proc.returncode, err[-2000:])
        left = sorted(p.name for p in out.iterdir())
        assert not [n for n in left if n.endswith(".whl")], (pause_at, left)
        if sig == signal.SIGINT:
            assert left == [], f"{pause_at}: an interrupted stamp removes its part file: {left}"
            assert "KeyboardInterrupt" in err
        else:
            assert all(n.endswith(".part") for n in left), left
    # The next run succeeds and clears what killed runs left; its copies are the members'.
    proc = stamp_proc(big_wheel, out, "nowhere")
    out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out_text == f"copies {MEMBERS}\n", "each member was one copy call: the points hold"
    (wheel,) = out.iterdir()
    assert wheel.name == "big-1.0+pt213cpu-1pt213cpu-py3-none-any.whl"
    with WheelFile.open(wheel) as wf:
        wf.validate_record()


BUILD_IN_PROCESS = """
import json, os, sys
sys.path.insert(0, "backend")
# Importing setuptools adds its _vendor folder to sys.path once, for good; that is setuptools'
# import, which any frontend running a setuptools-based backend has too.
import setuptools.build_meta
import abistamp.backend as b
before = (dict(os.environ), list(sys.path))
name = b.build_wheel(sys.argv[1])
after = (dict(os.environ), list(sys.path))
changed = sorted(k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k))
print(json.dumps({"name": name, "env_changed": changed, "path_same": before[1] == after[1]}))
"""


def snapshot(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_a_build_writes_only_where_it_may_and_restores_the_process(
        probe: Path, env213: Env, tmp_path: Path) -> None:
    before = snapshot(probe)
    out = tmp_path / "out"
    result = run([env213.python, "-c", BUILD_IN_PROCESS, out], cwd=probe,
                 env=env213.env(MAX_JOBS=""))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["env_changed"] == [] and report["path_same"], report
    assert [p.name for p in out.iterdir()] == [report["name"]], "no scratch folder is left"
    after = snapshot(probe)
    # What the project's own setup.py and setuptools write is theirs; nothing else may change.
    theirs = ("build/", "abistamp_probe.egg-info/", "probe/_built.py")
    added = sorted(k for k in after if k not in before and not k.startswith(theirs))
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert added == [] and changed == [], (added, changed)


@pytest.mark.slow
def test_a_killed_builds_scratch_folder_is_removed_by_the_next(probe: Path, env213: Env,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / f".abistamp-{dead.pid}-tmpabcd"
    stale.mkdir(parents=True)
    (stale / "abistamp_probe-1.0.0-py3-none-any.whl").write_bytes(b"half")
    run([env213.python, "-m", "build", "--wheel", "--no-isolation", "-o", out, probe])
    assert not stale.exists()
    assert len(list(out.glob("*.whl"))) == 1


def session_processes(session: int, comm: str | None = None) -> list[int]:
    """The processes of one process session (all of them, or those named comm)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session and \
                    (comm is None or (entry / "comm").read_text().strip() == comm):
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
    return found


def compilers_of(session: int) -> list[int]:
    """The compiler processes (cc1plus) of one process session."""
    return session_processes(session, "cc1plus")


def kill_session(session: int) -> None:
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_interrupting_a_real_compile_leaves_no_wheel_and_the_next_build_works(
        tiny: Path, env213: Env, tmp_path: Path) -> None:
    """`python -m build` of tiny-ext, interrupted while the C++ compiler runs: Ctrl-C as a
    terminal sends it (SIGINT to the whole foreground group), then SIGKILL to the whole tree
    (what a CI timeout does). Neither leaves a wheel or anything but a scratch folder that the
    next build removes; the next build makes a whole wheel.

    The compiler is held mid-compile by the test, not caught by a sleep: the source includes a
    FIFO, and the C++ compiler (cc1plus) waits in its open() until someone writes to it, which
    the test never does while it interrupts. For the last build the FIFO becomes an empty file.

    SIGKILL goes to every process of the build's session: ninja starts each compile in a
    process group of its own, so a SIGKILL to the build's group alone orphans the compilers,
    which run on until they finish (a CI runner's timeout kills the whole tree).
    """
    gate = tmp_path / "gate.h"
    os.mkfifo(gate)
    source = tiny / "csrc" / "tiny.cpp"
    source.write_text(f'#include "{gate}"\n' + source.read_text())
    out = tmp_path / "out"
    cmd = [str(env213.python), "-m", "build", "--wheel", "--no-isolation", "-o", str(out),
           str(tiny)]
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env213.env(MAX_JOBS="1"),
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while not compilers_of(proc.pid):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the compiler never started"
            time.sleep(0.05)
        assert proc.poll() is None, "the build ended while its compiler waits on the gate"
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            kill_session(proc.pid)
        try:
            output = proc.communicate(timeout=120)[0]
            # The compilers end with the build (with SIGINT, ninja passes it on to them); a
            # compiler left waiting on the gate would wait forever.
            deadline = time.monotonic() + 30
            while compilers_of(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = compilers_of(proc.pid)
        finally:
            kill_session(proc.pid)  # nothing may wait on the gate after the test
        assert proc.returncode != 0, output[-3000:]
        assert left == [], f"a compiler outlived the interrupted build ({sig!r})"
        if out.exists():
            assert not list(out.rglob("*.whl")), f"{sig!r} left a wheel: {list(out.rglob('*'))}"
            assert all(p.name.startswith(".abistamp-") for p in out.iterdir()), \
                list(out.iterdir())
    gate.unlink()
    gate.write_text("")
    run(cmd, env=env213.env(MAX_JOBS="1"))
    wheels = list(out.iterdir())
    assert [p.suffix for p in wheels] == [".whl"], wheels  # the scratch folders are gone
    with WheelFile.open(wheels[0]) as wf:
        wf.validate_record()
    assert wheels[0].name.startswith("tiny_ext-0.3.0+pt213cpu-1pt213cpu-")


def test_leftovers_of_writers_elsewhere_are_judged_by_age(tmp_path: Path) -> None:
    """A folder shared with another container or machine (a bind mount, NFS): its writers' pids
    mean nothing here, so their temporary files are left alone until they are a day old;
    this host's are removed as soon as their writer is gone."""
    from abistamp.core.atomic import FOREIGN_STALE_AFTER, _host, remove_stale_parts

    dead = subprocess.Popen(["true"])
    dead.wait()
    ours, other = _host(), "0badc0de"
    assert ours != other
    names = {
        "ours, writer gone": f".x.whl.{dead.pid}_{ours}.a1.part",
        "ours, writer running": f".x.whl.{os.getpid()}_{ours}.a2.part",
        "elsewhere, fresh": f".x.whl.{dead.pid}_{other}.a3.part",
        "elsewhere, old": f".x.whl.{dead.pid}_{other}.a4.part",
        "older name, writer gone": f".x.whl.{dead.pid}.a5.part",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half a wheel")
    old = time.time() - FOREIGN_STALE_AFTER - 60
    os.utime(tmp_path / names["elsewhere, old"], (old, old))
    remove_stale_parts(tmp_path)
    left = {what for what, name in names.items() if (tmp_path / name).exists()}
    assert left == {"ours, writer running", "elsewhere, fresh"}
