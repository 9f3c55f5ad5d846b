"""Profiles are plugins: a second one is one file (tests/probe_profile.py), found by abistamp
with no other change, and used by a real build through the real PEP 517 hook."""

from __future__ import annotations

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


def test_the_profile_file_follows_the_protocol() -> None:
    """What the build above relies on, checked by the type checker's rules at run time too."""
    from abistamp.core.profiles import Profile, all_profiles

    from .probe_profile import PROFILE

    wanted = {n for n in dir(Profile) if not n.startswith("_")} | {"name", "build_environ"}
    assert wanted <= set(dir(PROFILE))
    assert [p.name for p in all_profiles()] == ["deepspeed"]  # the installed package's own
    checked: Profile = PROFILE  # mypy holds the signatures
    assert checked.name == "probe"
