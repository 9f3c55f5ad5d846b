"""The bad-input battery: each input, the error it must give, and proof that nothing was written.

Every case runs the real backend hook (`build_wheel`) on a real project in a torch 2.13.0+cpu
environment, all in one Python process, the way a frontend may call hooks one after another.
After each case the test checks the message (problem and fix), that the output folder holds
nothing (no wheel, no partial file, no scratch folder), and that the process's environment
variables and sys.path are as they were.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from .conftest import DATA, Env, copy_project, run

TEMPLATE = '''
[build-system]
requires = ["setuptools>=64", "packaging>=22"]
build-backend = "abistamp.backend"
backend-path = ["backend"]
'''

# (name, text appended to pyproject.toml or None to keep it, config settings, environment,
#  expected words in the message). `DELETE` removes the project files, `LATIN-1:` appends the
# text in that encoding, `TOP:` puts it before every table.
CASES: list[tuple[str, str | None, dict[str, str | None], dict[str, str], str]] = [
    ("unknown key", "[tool.abistamp]\nlocal-versoin = 'auto'\n", {}, {},
     "did you mean `local-version`"),
    ("misspelled -C key", None, {"abistamp.lable": "x"}, {}, "did you mean `abistamp.label`"),
    ("misspelled env var", None, {}, {"ABISTAMP_PIM": "none"}, "did you mean `ABISTAMP_PIN`"),
    ("bool of wrong type", "[tool.abistamp]\nbuild-tag = 'perhaps'\n", {}, {}, "a boolean"),
    ("choice out of range", "[tool.abistamp]\npin = 'major'\n", {}, {}, "one of `auto`"),
    ("choice in env", None, {}, {"ABISTAMP_LOCAL_VERSION": "sometimes"}, "one of `auto`"),
    ("label with a dash", None, {"abistamp.label": "pt{major}-{minor}"}, {},
     "not a PEP 440 local version label"),
    ("label with an underscore", "[tool.abistamp]\nlabel = 'pt_{major}'\n", {}, {},
     "not a PEP 440 local version label"),
    ("label unknown field", None, {"abistamp.label": "pt{torch}"}, {},
     "uses the unknown field `{torch}`"),
    ("label unclosed brace", None, {"abistamp.label": "pt{major"}, {}, "not a valid template"),
    ("label ends with a dot", None, {"abistamp.label": "pt{major}."}, {},
     "not a PEP 440 local version label"),
    ("label positional field", None, {"abistamp.label": "pt{0}"}, {}, "unknown field `{0}`"),
    ("build number with a letter", None, {"abistamp.build-number": "1a"}, {}, "digits only"),
    ("build number negative", None, {}, {"ABISTAMP_BUILD_NUMBER": "-1"}, "digits only"),
    ("build number empty", "[tool.abistamp]\nbuild-number = ''\n", {}, {}, "digits only"),
    ("torch requirement unparsable", None, {"abistamp.torch": "torch>>2"}, {},
     "not a valid requirement"),
    ("torch requirement names another", None, {"abistamp.torch": "numpy==2"}, {},
     "names `numpy`, not torch"),
    ("torch requirement not met", None, {"abistamp.torch": "torch==2.14.*"}, {},
     "asks for `torch==2.14.*`"),
    ("torch requirement local label", None, {"abistamp.torch": "torch==2.13.0+cu130"}, {},
     "found torch 2.13.0+cpu"),
    ("CUDA required, CPU torch", None, {"abistamp.require-cuda": "true"}, {},
     "asks for a CUDA build"),
    ("jobs zero", None, {"abistamp.jobs": "0"}, {}, "a positive number or `auto`"),
    ("jobs word", "[tool.abistamp]\njobs = 'many'\n", {}, {}, "a positive number or `auto`"),
    ("ninja maybe", None, {"abistamp.ninja": "maybe"}, {}, "one of `auto`, `true`, `false`"),
    ("backend through -C", None, {"abistamp.backend": "setuptools.build_meta"}, {},
     "cannot choose the wrapped backend"),
    ("-C without a value", None, {"abistamp.pin": None}, {}, "was given no value"),
    ("TOML syntax", "[tool.abistamp\n", {}, {}, "is not valid TOML"),
    ("tool.abistamp not a table", "[tool]\nabistamp = 'on'\n", {}, {}, "is not a table"),
    ("backend module missing", None, {}, {"ABISTAMP_BACKEND": "no_such_module"},
     "the module `no_such_module` cannot be imported"),
    ("backend object missing", None, {}, {"ABISTAMP_BACKEND": "setuptools.build_meta:nope"},
     "`setuptools.build_meta` has no `nope`"),
    ("backend lacks a hook", None, {}, {"ABISTAMP_BACKEND": "json"},
     "lacks the mandatory hook `build_wheel`"),
    ("backend is abistamp", "[tool.abistamp]\nbackend = 'abistamp.backend'\n", {}, {},
     "names abistamp itself"),
    ("backend malformed", "[tool.abistamp]\nbackend = 'a:b:c'\n", {}, {},
     "is not of the form `module:object`"),
    ("backend not a string", "[tool.abistamp]\nbackend = 3\n", {}, {}, "must be a string"),
    ("profile unknown", None, {"abistamp.profile": "apex"}, {}, "one of `auto`, `deepspeed`"),
    ("no project files", "DELETE", {}, {}, "no setup.py, setup.cfg or pyproject.toml"),
    ("pyproject.toml not UTF-8", "LATIN-1:[tool.abistamp]\nlabel = 'j\xfcrgen'\n", {}, {},
     "is not UTF-8"),
    ("tool not a table", "TOP:tool = 'abistamp'\n", {}, {},
     "`tool` in `pyproject.toml` is not a table"),
    ("build number of a non-ASCII digit", None, {}, {"ABISTAMP_BUILD_NUMBER": "\u00b2"},
     "digits only"),
    ("label PEP 440 would rewrite", None, {"abistamp.label": "{major}.0{minor}"}, {},
     "normalises to `2.13`"),
    ("label starting with a digit", None, {"abistamp.label": "{major}{minor}{accelerator}"}, {},
     "installers would read build number 1213, not 1"),
]

RUNNER = r'''
import json, os, sys
cases = json.loads(sys.argv[1])
sys.path.insert(0, cases[0]["tree"] + "/backend")
import setuptools.build_meta  # setuptools adds its _vendor folder to sys.path once, for good
from abistamp.core.errors import AbistampError
results = []
for case in cases:
    os.chdir(case["tree"])
    env_before, path_before = dict(os.environ), list(sys.path)
    os.environ.update(case["env"])
    import abistamp.backend as b
    from abistamp.core.build import _BACKENDS
    _BACKENDS.clear()
    try:
        b.build_wheel(case["out"], case["config"])
        message = None
    except AbistampError as e:
        message = str(e)
    except Exception as e:
        message = f"NOT AN AbistampError: {type(e).__name__}: {e}"
    for k in case["env"]:
        os.environ.pop(k, None)
    results.append({"message": message, "env_same": dict(os.environ) == env_before,
                    "path_same": list(sys.path) == path_before})
print(json.dumps(results))
'''


@pytest.mark.slow
def test_bad_inputs_battery(env213: Env, tmp_path: Path) -> None:
    cases = []
    for i, (name, extra, config, environ, _) in enumerate(CASES):
        tree = copy_project(DATA / "probe", tmp_path / f"case{i}")
        if extra == "DELETE":
            for f in ("pyproject.toml", "setup.py"):
                (tree / f).unlink()
        elif extra is not None and extra.startswith("LATIN-1:"):
            (tree / "pyproject.toml").write_bytes((TEMPLATE + extra[8:]).encode("latin-1"))
        elif extra is not None and extra.startswith("TOP:"):  # a key before every table
            (tree / "pyproject.toml").write_text(extra[4:] + TEMPLATE)
        elif extra is not None:
            (tree / "pyproject.toml").write_text(TEMPLATE + extra)
        out = tmp_path / f"out{i}"
        out.mkdir()
        cases.append({"tree": str(tree), "out": str(out), "config": config, "env": environ,
                      "name": name})
    results = json.loads(run([env213.python, "-c", RUNNER, json.dumps(cases)],
                             env=env213.env()).stdout.strip().splitlines()[-1])
    assert len(results) == len(CASES) >= 30
    failures = []
    for (name, _, _, _, expected), case, result in zip(CASES, cases, results, strict=True):
        message = result["message"] or "(no error at all)"
        if expected not in message or "fix:" not in message:
            failures.append(f"{name}: expected {expected!r} and a fix, got: {message}")
        if list(Path(case["out"]).iterdir()):
            failures.append(f"{name}: left {list(Path(case['out']).iterdir())}")
        if not (result["env_same"] and result["path_same"]):
            failures.append(f"{name}: process state not restored: {result}")
    assert not failures, "\n".join(failures)


def test_corrupt_wheels_given_to_stamp(tmp_path: Path) -> None:
    """The wheel side of the battery (the command line's inputs); nothing is written."""
    import pytest

    from abistamp.core.abi import TorchABI
    from abistamp.core.errors import AbistampError
    from abistamp.core.record import Stamp, abi_fields
    from abistamp.core.stamp import stamp_wheel

    stamp = Stamp(None, "1pt213cpu", (), abi_fields(TorchABI("2.13.0+cpu")))
    good = tmp_path / "ok-1.0-py3-none-any.whl"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("ok-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: ok\nVersion: 1.0\n")
        zf.writestr("ok-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        zf.writestr("ok/__init__.py", "")
        zf.writestr("ok-1.0.dist-info/RECORD", "ok/__init__.py,,\n")  # no hash: refused
    no_dist_info = tmp_path / "bare-1.0-py3-none-any.whl"
    with zipfile.ZipFile(no_dist_info, "w") as zf:
        zf.writestr("bare/__init__.py", "")
    no_record = tmp_path / "norec-1.0-py3-none-any.whl"
    with zipfile.ZipFile(no_record, "w") as zf:
        zf.writestr("norec-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: norec\n"
                    "Version: 1.0\n")
        zf.writestr("norec-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    missing = tmp_path / "gone-1.0-py3-none-any.whl"
    empty = tmp_path / "empty-1.0-py3-none-any.whl"
    empty.write_bytes(b"")
    for wheel, words in ((good, "RECORD has no hash"), (no_dist_info, "0 .dist-info folders"),
                         (no_record, "has no `norec-1.0.dist-info/RECORD`"),
                         (missing, "does not exist"), (empty, "not a readable wheel")):
        out = tmp_path / "out"
        with pytest.raises(AbistampError, match=words):
            stamp_wheel(wheel, out, stamp)
        assert not out.exists() or not list(out.iterdir()), wheel
        shutil.rmtree(out, ignore_errors=True)


def test_deepspeed_inputs_this_machine_cannot_make(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two DeepSpeed profile errors whose input no real build here gives: a DeepSpeed wheel
    without its build record (DeepSpeed's setup.py always writes one), and `portable-cpu` on a
    machine that is not x86-64 (this one is)."""
    import platform

    import pytest

    from abistamp.core.abi import TorchABI
    from abistamp.core.errors import AbistampError
    from abistamp.core.profiles.deepspeed import INFO_MODULE, DeepSpeed, wheel_facts
    from abistamp.core.settings import Settings
    from abistamp.core.stamp import read_wheel

    wheel = tmp_path / "deepspeed-0.19.8-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("deepspeed/__init__.py", "")
        for rel in ("METADATA", "WHEEL", "RECORD"):
            zf.writestr(f"deepspeed-0.19.8.dist-info/{rel}", "")
    info = read_wheel(wheel, DeepSpeed.wheel_files)
    with pytest.raises(AbistampError, match=f"the DeepSpeed wheel `{wheel.name}` has no "
                                            f"`{INFO_MODULE}`") as caught:
        wheel_facts(info, TorchABI("2.13.0+cpu"), required=True)
    assert caught.value.fix and "profile = \"none\"" in caught.value.fix
    assert wheel_facts(info, TorchABI("2.13.0+cpu"), required=False) is None

    settings = Settings.load(tmp_path, {"abistamp.portable-cpu": "true"}, environ={})
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(AbistampError, match="portable CPU flags are known for x86-64 only "
                                            r"\(this is aarch64\)"):
        DeepSpeed().prepare(tmp_path, settings, {})
