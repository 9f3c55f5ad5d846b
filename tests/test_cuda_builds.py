"""CUDA builds on a GPU-less builder, for real: tiny-ext's CUDA kernel compiled by nvcc for torch
2.14.1+cu130 through `abistamp build` with the toolkit wheels of its environment, and what the
backend refuses or asks for. DeepSpeed's fused Adam for every arch of the target torch, by the
toolkit from NVIDIA's wheels with the machine's toolkit hidden in a mount namespace
(`hidden_toolkit` here), is built once per run as the CUDA variant of test_cli_deepspeed.py's
wheelhouse and checked there with the helpers here.

What lands in the op's library is read back with `cuobjdump` (NVIDIA's `nvidia-cuda-cuobjdump`
wheel): one cubin per arch, PTX for the newest. The toolkit folder abistamp keeps lives in the
test cache (XDG_CACHE_HOME), so one run installs it once for every test that needs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
import zipfile
from pathlib import Path

import pytest

from .cli_support import ABISTAMP
from .conftest import (
    CACHE,
    EXAMPLES,
    Env,
    Result,
    _make_env,
    cache_lock,
    clean_env,
    copy_project,
    need,
    read_record,
    run,
    uv_bin,
)

pytestmark = [pytest.mark.slow, pytest.mark.cuda]

CUOBJDUMP = "nvidia-cuda-cuobjdump==13.5.37"
TOOLKIT_REQ = "cuda-toolkit[nvcc,cccl]==13.0.*"
XDG_CACHE = CACHE / "xdg-cache"  # abistamp keeps its toolkit folder under it, per run and after
ANSI = "\x1b["


def build_env(**extra: str) -> dict[str, str]:
    env = clean_env(XDG_CACHE_HOME=str(XDG_CACHE), **extra)
    for name in ("TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CUDA_PATH", "CPATH"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def cuobjdump() -> Path:
    folder = CACHE / CUOBJDUMP.replace("==", "-")
    with cache_lock(folder.name):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            result = run([uv_bin(), "pip", "install", "-q", "-p", sys.executable, "--target",
                          folder, CUOBJDUMP], check=False)
            need(result.returncode == 0, f"could not install {CUOBJDUMP}: {result.stderr[-300:]}")
            (folder / ".done").write_text(CUOBJDUMP)
    (binary,) = folder.glob("nvidia/cu*/bin/cuobjdump")
    return binary


def torch_archs(env: Env) -> list[str]:
    """What the target torch was built for, asked the way abistamp does not (a second opinion):
    `sm_75 ... sm_120` as `7.5 ... 12.0`."""
    flags = env.py("import torch; print(torch._C._cuda_getArchFlags())").stdout.split()
    return [f"{int(f[3:-1])}.{f[-1]}" for f in flags if f.startswith("sm_")]


def gpu_code(so: bytes, tmp_path: Path, cuobjdump: Path) -> tuple[set[str], set[str]]:
    """The archs of the cubins and of the PTX in a library: ({"sm_75", ...}, {"sm_120"})."""
    lib = tmp_path / "op.so"
    lib.write_bytes(so)
    elf = run([cuobjdump, "--list-elf", lib]).stdout
    ptx = run([cuobjdump, "--list-ptx", lib]).stdout
    return set(re.findall(r"\.(sm_\d+)\.cubin", elf)), set(re.findall(r"\.(sm_\d+)\.ptx", ptx))


def member(wheel: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name)


def built_wheel(wheelhouse: Path) -> Path:
    (wheel,) = wheelhouse.glob("*/*.whl")
    return wheel


def machine_toolkit_root() -> Path | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "-v", "--dryrun", "x.cu"], capture_output=True, text=True,
                         check=False)
    m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return Path(m.group(1).strip()).resolve() if m else None


def hidden_toolkit(cmd: list[str | Path], empty: Path) -> list[str | Path]:
    """cmd in a mount namespace where the machine's CUDA toolkit root is an empty folder."""
    root = machine_toolkit_root()
    if root is None:
        return cmd  # nothing to hide
    need(os.geteuid() == 0 and shutil.which("unshare") is not None,
         "hiding the machine's CUDA toolkit needs root and `unshare` (a mount namespace)")
    empty.mkdir()
    script = 'mount --bind "$1" "$2" && test ! -e "$2/bin/nvcc" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh", empty, root, *cmd]


def on_a_terminal(cmd: list[str | Path], env: dict[str, str], timeout: float = 1200
                  ) -> tuple[int, str]:
    """Run cmd with stdout and stderr on a pseudo-terminal (200 columns); its exit code and
    everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env={**env, "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def env214_toolkit(torch214_wheels: Path) -> Env:
    """torch 2.14.1+cu130 with NVIDIA's toolkit wheels installed beside it, as an isolated
    build's environment has them after the backend asked for them (this module's own: uv
    links torch from its cache, seconds, once)."""
    return _make_env("214-toolkit", "torch==2.14.1", torch214_wheels, [TOOLKIT_REQ])


def test_tiny_ext_cuda_with_the_toolkit_wheels_of_its_environment_on_a_terminal(
        env214_toolkit: Env, tmp_path: Path) -> None:
    """The toolkit wheels in the build environment (an isolated build's route): used from there,
    with the unversioned libcudart.so link in abistamp's cache, never in the environment. The
    output goes to a terminal: one status line per running variant, rewritten in place."""
    env = env214_toolkit
    src = copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")
    rc, out = on_a_terminal([*ABISTAMP, "build", src, "--python", env.python,
                             "--env", "TINY_EXT_CUDA=1", "-C", "abistamp.cuda-toolkit=wheels",
                             "-C", "abistamp.cuda-archs=9.0", "-o", tmp_path / "wh",
                             "--work-dir", tmp_path / "work"], build_env())
    assert rc == 0, out[-3000:]
    record = read_record(built_wheel(tmp_path / "wh"))
    assert record["compiled_cuda"] is True
    assert record["cuda_toolkit"]["source"] == "build-environment"
    assert record["cuda_toolkit"]["requirement"] == TOOLKIT_REQ
    (log,) = (tmp_path / "work" / "logs").glob("*.log")
    site = next(env.root.glob("lib/python3.*/site-packages"))
    assert f"{site}/nvidia/cu13/bin/nvcc" in log.read_text()
    assert not (site / "nvidia" / "cu13" / "lib64").exists(), "the environment is not ours"
    assert not list((site / "nvidia" / "cu13" / "lib").glob("libcudart.so")), \
        "the environment is not ours"
    links = list((XDG_CACHE / "abistamp" / "cuda-toolkit" / "links").glob("*/libcudart.so"))
    assert any(link.resolve().parent == (site / "nvidia" / "cu13" / "lib").resolve()
               for link in links), links
    # One status line per running variant, rewritten in place (cursor up, erase), naming the
    # extension, the ninja step and the time; the compiler's own output stays in the log.
    assert "\x1b[1F\x1b[J" in out
    status = re.findall(r"building 'tiny_ext\._C' \[\d+/\d+\] [\w.]+, (?:\d+m)?\d+s", out)
    assert status, out[-3000:]
    assert "-DTORCH_EXTENSION_NAME" not in out and "-DTORCH_EXTENSION_NAME" in log.read_text()


def test_an_arch_nvcc_cannot_compile_fails_before_compiling(env214: Env, tmp_path: Path) -> None:
    need(shutil.which("nvcc") is not None, "no nvcc on this machine")
    src = copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")
    result = run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env214.python,
                  "--out-dir", tmp_path / "out", src], check=False,
                 env=env214.env(TINY_EXT_CUDA="1", TORCH_CUDA_ARCH_LIST="6.0;9.0"))
    assert result.returncode != 0
    assert re.search(r"`TORCH_CUDA_ARCH_LIST` asks for CUDA arch `6.0` \(of `6.0;9.0`\), which "
                     r"nvcc 13\.0\.\d+ at `\S+` cannot compile: it supports 7\.5, ",
                     result.stderr), result.stderr[-2000:]
    assert "fix: drop those archs" in result.stderr
    assert not list((src / "build").rglob("*.o")), "nothing was compiled"


def backend_hook(env: Env, project: Path, code: str, **environ: str) -> Result:
    return run([env.python, "-c", "import json, abistamp.backend as b; " + code], cwd=project,
               check=False, env=env.env(PYTHONPATH=str(project / "backend"), **environ))


def test_isolated_builds_ask_for_the_toolkit_and_others_name_it(env214: Env,
                                                                tmp_path: Path) -> None:
    """With no toolkit wheels anywhere: get_requires_for_build_wheel asks for them (a frontend
    then installs them into its isolated environment), and a build without isolation fails
    naming them."""
    src = copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")
    empty_cache = str(tmp_path / "cache")
    config = '{"abistamp.cuda-toolkit": "wheels"}'
    asked = backend_hook(env214, src, f"print(json.dumps(b.get_requires_for_build_wheel({config})))",
                         XDG_CACHE_HOME=empty_cache)
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert TOOLKIT_REQ in json.loads(asked.stdout.strip().splitlines()[-1])
    failed = backend_hook(env214, src, f"b.build_wheel({str(tmp_path / 'out')!r}, {config})",
                          XDG_CACHE_HOME=empty_cache, TINY_EXT_CUDA="1")
    assert failed.returncode != 0
    assert (f"NVIDIA's toolkit wheels `{TOOLKIT_REQ}` are neither in the build environment"
            in failed.stderr), failed.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_native_archs_need_a_visible_gpu(env214: Env, tmp_path: Path) -> None:
    if gpu_visible(env214):
        pytest.skip("a GPU is visible here: `native` has archs to give")
    src = copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")
    failed = backend_hook(env214, src, f"b.build_wheel({str(tmp_path / 'out')!r}, "
                          '{"abistamp.cuda-archs": "native"})')
    assert failed.returncode != 0
    assert ("config setting `abistamp.cuda-archs` is `native`, but no GPU is visible to torch "
            "here" in failed.stderr), failed.stderr[-2000:]


def gpu_visible(env: Env) -> bool:
    return env.py("import torch; print(torch.cuda.is_available())").stdout.split()[-1] == "True"
