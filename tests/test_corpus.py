"""A corpus of real third-party torch extensions, built from the package registry by
`abistamp build NAME==VERSION --python ENV` for torch 2.13.0+cpu, exactly as the README tells a
user to (abistamp holds no code of its own for any of them): each wheel is stamped, installed
into a fresh environment, imported, and one of its compiled ops is called and its result checked.

- torch-scatter 2.1.2: its setup.py imports torch at the top, which `pip download --no-binary`
  (the old fetch) could not even download;
- torch-cluster 1.6.3, same family, with a runtime dependency (scipy);
- DeepSpeed 0.19.8 with `DS_BUILD_CPU_ADAM=1` exported in the calling shell is in
  tests/test_cli_deepspeed.py (the same build serves its other tests).

Both PyG builds pass `use_ninja=False`: torch compiles one file at a time, so the backend
compiles MAX_JOBS extensions at once (setuptools' build_ext --parallel). The two builds run at
once, with MAX_JOBS=2 each: the module starts first in a run (conftest.py, LONGEST_FIRST), and
torch-cluster alone is over ten minutes of compiling, so it must be able to use both cores when
the other worker's builds leave them free. The wheelhouses are kept in the test cache, keyed by abistamp's
backend code, so a second run of the suite builds nothing.

The builds are given Python's own compiler flags with `-g0` after them (`--env CXXFLAGS=...`, and
CFLAGS alike), as a user's CI job can: Python's flags carry `-g`, and both projects link with
`-s`, so the debug information is made only to be stripped. Measured on one torch-cluster
source: 66 s of compiler time with it, 42 s without. setuptools (80 and later) takes CXXFLAGS
*instead of* Python's flags for C++ sources, so the value repeats them (`-DNDEBUG` among them)
and CFLAGS alone would change nothing: a first try with `CFLAGS=-g0` compiled with `-g` all the
same. The test checks that every compile had `-g0` last, that the shipped libraries are stripped
(what the flag does not change), and that the flags are in the manifest, as every `--env` is.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from .cli_support import ABISTAMP, fresh_env, manifest, summary_rows
from .conftest import CACHE, Env, cache_lock, clean_env, need, read_record, run
from .test_deepspeed import backend_digest

pytestmark = pytest.mark.slow

# name==version -> (module, the sdist's sha256 on the registry, a check of one compiled op)
CORPUS = {
    "torch-scatter==2.1.2": (
        "torch_scatter", "69b3aa435f2424ac6a1bfb6ff702da6eb73b33ca0db38fb26989c74159258e47",
        ("src = torch.tensor([1.0, 2.0, 3.0, 4.0]); index = torch.tensor([0, 1, 0, 1])\n"
        "out, arg = torch_scatter.scatter_max(src, index)\n"
        "csr = torch_scatter.segment_csr(src, torch.tensor([0, 2, 4]), reduce='sum')\n"
        "result = [out.tolist(), arg.tolist(), csr.tolist()]"),
        [[3.0, 4.0], [2, 3], [3.0, 7.0]]),
    "torch-cluster==1.6.3": (
        "torch_cluster", "78d5a930a5bbd0d8788df8c6d66addd68d6dd292fe3edb401e3dacba26308152",
        ("pos = torch.tensor([[0.0, 0.0], [11.0, 9.0], [2.0, 8.0], [2.0, 2.0], [8.0, 3.0]])\n"
        "result = torch_cluster.grid_cluster(pos, torch.tensor([5.0, 5.0])).tolist()"),
        [0, 5, 3, 0, 1]),
}


def no_debug_info(env: Env) -> dict[str, str]:
    """Python's compiler flags with `-g0` last: the debug information they ask for (`-g`) is
    stripped at link time by both projects (`-s`)."""
    flags = env.py("import sysconfig; print(sysconfig.get_config_var('CFLAGS'))").stdout.strip()
    assert " -g " in f" {flags} ", flags  # what this undoes
    return {"CFLAGS": f"{flags} -g0", "CXXFLAGS": f"{flags} -g0"}


@pytest.fixture(scope="module")
def corpus(env213: Env, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each release's wheelhouse, built once (both builds at once) and kept in the cache."""
    root = CACHE / "corpus" / backend_digest()[:16]
    with cache_lock("corpus"):
        todo = [spec for spec in CORPUS if not (root / spec / ".done").is_file()]
        work = tmp_path_factory.mktemp("corpus-work")
        flags = [arg for name, value in no_debug_info(env213).items()
                 for arg in ("--env", f"{name}={value}")]
        procs = {}
        for spec in todo:
            cmd = [*ABISTAMP, "build", spec, "--python", str(env213.python), "-o",
                   str(root / spec / "wh"), "--work-dir", str(work / spec), "--cache-dir",
                   str(CACHE / "sdists"), *flags]
            procs[spec] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, env=clean_env(MAX_JOBS="2"))
        for spec, proc in procs.items():
            out, err = proc.communicate(timeout=2400)
            if proc.returncode != 0 and ("no sdist of" in err or "could not download" in err):
                need(False, f"could not fetch {spec}: {err[-300:]}")
            assert proc.returncode == 0, (spec, out[-3000:], err[-3000:])
            assert summary_rows(out)[f"--python {env213.python}"][0] == "built"
            # The flags reached the compiler: every compile ends its own flags with -g0.
            compiles = [ln for log in (work / spec / "logs").glob("*.log")
                        for ln in log.read_text().splitlines()
                        if ln.startswith(("g++ ", "gcc ", "c++ ")) and " -c " in ln]
            assert compiles and all(" -g0 " in ln for ln in compiles), compiles[:1]
            (root / spec / "build.log").write_text(err)
            (root / spec / ".done").write_text("")
    return {spec: root / spec / "wh" for spec in CORPUS}


@pytest.mark.parametrize("spec", list(CORPUS))
def test_release_built_stamped_installed_and_run(spec: str, corpus: dict[str, Path],
                                                 torch213_wheels: Path, tmp_path: Path) -> None:
    module, sha256, code, expected = CORPUS[spec]
    wheelhouse = corpus[spec]
    (entry,) = manifest(wheelhouse)["variants"].values()
    # Fetched from the registry by name and version, checked against the index's hash.
    assert entry["source"]["kind"] == "requirement" and entry["source"]["spec"] == spec
    assert entry["source"]["sha256"] == sha256
    assert entry["source"]["checked"] == "sha256 from the index verified"
    name, version = spec.split("==")
    wheel = wheelhouse / entry["wheel"]
    assert wheel.name == (f"{name.replace('-', '_')}-{version}+pt213cpu-1pt213cpu-"
                          "cp311-cp311-linux_x86_64.whl")
    record = read_record(wheel)
    assert (record["torch"], record["accelerator"], record["pin"]) == (
        "2.13.0+cpu", "cpu", "torch==2.13.0+cpu")
    assert record["compiled_cuda"] is False
    # The shipped libraries are stripped by the projects' own link flags, with or without the
    # `-g0` the build was given (recorded with the variant, as every `--env` is).
    assert entry["environment"]["CXXFLAGS"].endswith(" -g0")
    with zipfile.ZipFile(wheel) as zf:
        libraries = [zf.read(n) for n in zf.namelist() if n.endswith(".so")]
    assert libraries and not [lib for lib in libraries if b".debug_info" in lib]
    env = fresh_env(tmp_path / "env", torch213_wheels, "torch==2.13.0", wheel)
    program = (f"import json, torch, {module}\n{code}\n"
               f"print(json.dumps([result, {module}.__version__]))")
    result, loaded = json.loads(run([env.python, "-c", program]).stdout)
    assert result == expected
    assert loaded == version
