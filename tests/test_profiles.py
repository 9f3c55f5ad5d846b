"""Profiles are plugins: a second one is one file (tests/probe_profile.py), found by abistamp
with no other change, and used by a real build through the real PEP 517 hook."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from .conftest import Env, read_record, run

PROFILE_FILE = Path(__file__).resolve().parent / "probe_profile.py"


def build_probe(probe: Path, env213: Env, out: Path) -> Path:
    run([env213.python, "-m", "build", "--wheel", "--no-isolation", "-o", out, probe])
    return next(out.glob("*.whl"))


@pytest.mark.slow
def test_a_profile_in_one_file_takes_part_in_a_real_build(probe: Path, env213: Env,
                                                           tmp_path: Path) -> None:
    # Without the file (negative control): the probe matches no profile.
    plain = build_probe(probe, env213, tmp_path / "plain")
    assert "profile" not in read_record(plain)
    assert str(parse_wheel_filename(plain.name)[1]).startswith("1.0.0+")

    shutil.copy(PROFILE_FILE, probe / "backend" / "abistamp" / "core" / "profiles" / "probe.py")
    wheel = build_probe(probe, env213, tmp_path / "with")
    record = read_record(wheel)
    # environ(): the variable reached setup.py; verify(): what it recorded is in the record.
    assert str(parse_wheel_filename(wheel.name)[1]) == "1.0.0.post7+pt213cpu"
    assert record["profile"] == {"name": "probe", "torch": record["torch"], "cuda": None}
    assert record["torch"] == "2.13.0+cpu"


# One build_wheel hook in a process of its own, under an audit hook (PEP 578) that sees every
# open of a wheel: prints the wheel's name and each open as [path, flags].
_COUNT_OPENS = """
import json, sys
opened = []
def audit(event, args):
    if event == "open" and str(args[0]).endswith(".whl"):
        opened.append([str(args[0]), args[2]])
sys.path.insert(0, "backend")
from abistamp import backend
sys.addaudithook(audit)
name = backend.build_wheel(sys.argv[1])
print(json.dumps({"name": name, "opened": opened}))
"""


@pytest.mark.slow
def test_a_build_opens_the_built_wheel_once_to_read_and_once_to_copy(
        probe: Path, env213: Env, tmp_path: Path) -> None:
    """The wheel the wrapped backend built is read once, for its .dist-info and what the profile
    checks (`wheel_files`), and opened once more for the stamped copy: not once per reader."""
    shutil.copy(PROFILE_FILE, probe / "backend" / "abistamp" / "core" / "profiles" / "probe.py")
    out = tmp_path / "out"
    seen = json.loads(run([env213.python, "-c", _COUNT_OPENS, out], cwd=probe
                          ).stdout.splitlines()[-1])
    # The profile read its member in that one read: verify()'s object is in the record.
    assert read_record(out / seen["name"])["profile"]["name"] == "probe"
    writing = os.O_WRONLY | os.O_RDWR
    built = [path for path, flags in seen["opened"]
             if Path(path).parent != out and not flags & writing]
    assert len(set(built)) == 1, seen["opened"]  # the wrapped backend's, in the scratch folder
    assert len(built) == 2, seen["opened"]


def test_the_profile_file_follows_the_protocol() -> None:
    """What the build above relies on, checked by the type checker's rules at run time too."""
    from abistamp.core.profiles import Profile, all_profiles

    from .probe_profile import PROFILE

    # Methods, and the attributes the protocol declares (name, build_environ, wheel_files).
    wanted = {n for n in dir(Profile) if not n.startswith("_")} | set(Profile.__annotations__)
    assert wanted <= set(dir(PROFILE))
    assert [p.name for p in all_profiles()] == ["deepspeed"]  # the installed package's own
    checked: Profile = PROFILE  # mypy holds the signatures
    assert checked.name == "probe"
