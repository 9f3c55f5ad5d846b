"""The command line's conventions, with nothing built: help, version, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
import shlex
import sys
import zipfile
from pathlib import Path

import pytest

from abistamp import __version__
from abistamp.cli.main import build_parser

from .cli_support import ABISTAMP, cli, fresh_env
from .conftest import Env, run


def test_version() -> None:
    assert cli("--version").stdout.strip() == f"abistamp {__version__}"


# Every command, and the fact its help must state (beyond usage and options).
COMMANDS = {
    "build": "Variants already in the wheelhouse are skipped.",
    "stamp": "with the ABI of an environment's torch, by the backend's rules and code",
    "repair": "left to the installed torch; the stamps and the ABI record kept",
    "inspect": "Show the ABI record, stamps and torch pins of wheels.",
    "check": "Reads files only: no import of torch. Exit code 1 on any mismatch.",
    "uv-config": "make a uv project install each extra's wheels from one ABI folder",
    "index": "refusing two different files under one name",
    "matrix": "Expand [tool.abistamp.matrix] of PROJECT's pyproject.toml",
}


def examples(help_text: str) -> list[list[str]]:
    """The command lines of a help text's `example(s):` section that run abistamp."""
    section = re.split(r"^examples?:$", help_text, flags=re.MULTILINE)[1]
    lines = [shlex.split(line, comments=True) for line in section.splitlines() if line.strip()]
    return [words[1:] for words in lines if words and words[0] == "abistamp"]


def test_help_lists_every_command_examples_and_exit_codes() -> None:
    out = cli("--help").stdout
    listed = re.search(r"\{([a-z,-]+)\}", out)
    assert listed is not None and set(listed[1].split(",")) == set(COMMANDS), \
        "a new command needs its row in COMMANDS"
    for command in COMMANDS:
        assert re.search(rf"^    {command} +\w", out, re.MULTILINE), command
    assert "examples:" in out and "exit codes: 0 ok; 1 a mismatch" in out
    # Each example is a command line the real parser accepts.
    shown = examples(out)
    assert {args[0] for args in shown} == set(COMMANDS)
    for args in shown:
        build_parser().parse_args(args)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help_with_examples(command: str) -> None:
    out = cli(command, "--help").stdout
    assert out.startswith(f"usage: abistamp {command}")
    assert COMMANDS[command] in " ".join(out.split()), out
    shown = examples(out)
    assert shown, f"`abistamp {command} --help` shows no example"
    for args in shown:
        assert args[0] == command, args
        assert build_parser().parse_args(args).command == command, args


def test_no_command_prints_help_and_exits_2() -> None:
    result = cli(check=False)
    assert result.returncode == 2 and "commands:" in result.stdout


def one_line_error(*args: str | Path) -> str:
    """Run a command that must fail as a usage/input error: exit 2, one line with the fix."""
    result = cli(*args, check=False)
    assert result.returncode == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, result.stderr
    assert "(fix: " in errors[0], errors[0]
    return errors[0]


def test_usage_errors(tmp_path: Path) -> None:
    assert "the following arguments are required: SOURCE" in one_line_error("build")
    assert "no variant to build" in one_line_error("build", str(tmp_path))
    assert "neither a folder, an sdist file nor an exact `name==version`" in one_line_error(
        "build", "deepspeed>=0.19", "--torch", "torch==2.13.0")
    assert "names `numpy`, not torch" in one_line_error(
        "build", str(tmp_path), "--torch", "numpy==2.0")
    line = one_line_error("build", str(tmp_path), "--torch", "torch==2.13.0",
                          "-C", "abistamp.lable=x")
    assert "unknown config setting `abistamp.lable`" in line
    assert "did you mean `abistamp.label`?" in line
    assert "`--env DS_BUILD_CPU_ADAM` is not of the form" in one_line_error(
        "build", str(tmp_path), "--torch", "torch==2.13.0", "--env", "DS_BUILD_CPU_ADAM")


def test_build_refuses_a_wheel_and_a_folder_that_is_no_project(tmp_path: Path) -> None:
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert "is a wheel, which is already built" in one_line_error(
        "build", str(wheel), "--torch", "torch==2.13.0")
    assert "neither setup.py nor pyproject.toml" in one_line_error(
        "build", str(tmp_path), "--torch", "torch==2.13.0")


def test_inspect_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    assert "is not a readable wheel" in one_line_error("inspect", str(bad))
    assert "is not a wheel filename" in one_line_error("inspect", str(tmp_path / "x.txt"))


def test_inspect_an_unstamped_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "plain-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("plain-1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n"
                    "Requires-Dist: torch>=2.0\nRequires-Dist: torchvision\n")
        zf.writestr("plain-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        zf.writestr("plain-1.0.dist-info/RECORD", "")
    out = cli("inspect", wheel).stdout
    assert "no record: this wheel is not stamped" in out
    assert "torch pins    torch>=2.0\n" in out  # torchvision is not a torch pin
    data = json.loads(cli("inspect", "--json", wheel).stdout)
    assert data[0]["record"] is None and data[0]["torch_requires"] == ["torch>=2.0"]


def test_uv_config_errors(tmp_path: Path) -> None:
    assert "does not exist" in one_line_error("uv-config", str(tmp_path / "nowhere"),
                                              "--extra", "cpu=pt213cpu")
    assert "has no ABI folder `pt213cpu`" in one_line_error("uv-config", str(tmp_path),
                                                             "--extra", "cpu=pt213cpu")
    assert "is not of the form NAME=ABI" in one_line_error("uv-config", str(tmp_path),
                                                           "--extra", "pt213cpu")


def test_stamp_needs_an_abi_source(tmp_path: Path) -> None:
    result = cli("stamp", str(tmp_path / "x-1.0-py3-none-any.whl"), check=False)
    assert result.returncode == 2
    assert "one of the arguments --python --abi-from is required" in result.stderr


@pytest.mark.slow
def test_check_an_environment_without_records(torch213_wheels: Path, tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "env", torch213_wheels, "torch==2.13.0")
    result = cli("check", "--python", env.python)
    assert f"torch:   {env.torch} (cpu)" in result.stdout
    assert "no distribution here carries an abistamp record" in result.stdout
    data = json.loads(cli("check", "--python", env.root, "--json").stdout)
    assert data["ok"] is True and data["results"] == []
    assert data["torch"]["torch"] == env.torch == "2.13.0+cpu"


@pytest.mark.slow
def test_check_defaults_to_the_active_environment(env213: Env, tmp_path: Path) -> None:
    env = env213.env()  # VIRTUAL_ENV points at env213, as an activated venv would
    result = run([*ABISTAMP, "check"],
                 env=env, cwd=tmp_path)
    assert f"python:  {env213.python}" in result.stdout


def test_cuda_arch_rules_of_check() -> None:
    """SASS runs on its major with an equal or higher minor; PTX is compiled for newer GPUs.
    (No GPU here: the rule is checked as a function; nvidia-smi is asked only with one.)"""
    from abistamp.cli.check import arch_problems

    assert arch_problems("8.0;9.0", ["9.0"]) == []
    assert arch_problems("8.0", ["8.6"]) == []
    assert arch_problems("8.6", ["8.0"]) != []
    assert arch_problems("8.0;9.0", ["12.0"]) != []
    assert arch_problems("8.0;9.0+PTX", ["12.0"]) == []
    (problem,) = arch_problems("7.5 8.0", ["9.0"])
    assert problem == "compiled for CUDA archs 7.5 8.0; this GPU is sm_9.0"


def test_top_level_help_in_docs_is_the_real_one() -> None:
    """docs/cli.md shows `abistamp --help` verbatim; regenerate the block when a command or its
    summary changes."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    block = docs.split("$ abistamp --help\n", 1)[1].split("```", 1)[0]
    assert block == cli("--help").stdout


def test_a_command_imports_only_its_own_module() -> None:
    """The registry is lazy, as pip's: `abistamp check` loads no other command's module."""
    code = ("import sys\nfrom abistamp.cli.main import main\n"
            "try:\n    main(['check', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(n for n in sys.modules if n.startswith('abistamp.cli.')), "
            "file=sys.stderr)\n")
    loaded = run([sys.executable, "-c", code]).stderr.strip()
    assert loaded == "['abistamp.cli.check', 'abistamp.cli.common', 'abistamp.cli.main']", loaded
