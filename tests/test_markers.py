"""`-m "not slow"` is a real fast subset: the collection-time check in conftest.py refuses a
test that reaches a torch environment, a compile or the CUDA torch without its marker, also
through a fixture of its own, before any of those fixtures is made."""

from __future__ import annotations

import pytest

from .conftest import REPO

pytest_plugins = ["pytester"]

PROJECT_TESTS = '''
import pytest

@pytest.fixture()
def built(env213):  # a module fixture that builds on a torch environment
    return env213

def test_unmarked_env(env213):
    pass

def test_unmarked_through_a_fixture(built):
    pass

@pytest.mark.slow
def test_cuda_without_cuda(env214):
    pass

@pytest.mark.slow
@pytest.mark.cuda
def test_marked(env214):
    pass

def test_fast():
    pass
'''


def test_unmarked_slow_tests_fail_before_their_fixtures(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_project=PROJECT_TESTS)
    # A cache folder that does not exist: any torch environment made would land there.
    cache = pytester.path / "no-cache-here"
    monkeypatch.setenv("TEST_ENV_CACHE", str(cache))
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "not cuda", "-rE")
    result.assert_outcomes(passed=1, errors=3, deselected=1)
    result.stdout.fnmatch_lines([
        "*test_unmarked_env uses env213, torch213_wheels but is not marked slow*",
        "*test_unmarked_through_a_fixture uses env213, torch213_wheels but is not marked slow*",
        "*test_cuda_without_cuda uses env214, torch214_wheels but is not marked cuda:*",
    ])
    assert not cache.exists(), "a refused test's fixtures must not be made"


def test_the_longest_modules_are_handed_out_first() -> None:
    """LONGEST_FIRST names modules that exist, and the suite's collection starts with them, in
    that order (pytest-xdist hands modules out in collection order with
    `--no-loadscope-reorder`, which scripts/test passes)."""
    import subprocess
    import sys

    from .conftest import LONGEST_FIRST

    assert "--no-loadscope-reorder" in (REPO / "scripts" / "test").read_text()
    assert all((REPO / "tests" / name).is_file() for name in LONGEST_FIRST)
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                             "-p", "no:cacheprovider", "tests"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    modules = list(dict.fromkeys(line.split("::")[0].rsplit("/", 1)[-1]
                                 for line in listed if "::" in line))
    assert modules[:len(LONGEST_FIRST)] == list(LONGEST_FIRST), modules[:12]
