"""`abistamp stamp`: stamp wheels built elsewhere with the ABI of a given torch.

The stamps are the backend's (label, local version, build tag, torch pin, ABI record), made by
the same functions (`labels`, `stamp.stamp_wheel`) from the same settings. Two decisions differ
because the wheel is finished: the local version label is added under `auto` (no frontend
holds this wheel's metadata), and the pin is added (the stamped wheel is a new artifact).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from abistamp.core.abi import TorchABI
from abistamp.core.errors import AbistampError
from abistamp.core.labels import torch_pin
from abistamp.core.profiles import all_profiles, wheel_files
from abistamp.core.record import Stamp, to_abi
from abistamp.core.settings import Settings
from abistamp.core.settings_model import ConfigSettings
from abistamp.core.stamp import WheelInfo, make_stamp, read_wheel, stamp_wheel

from .common import EXIT_OK, parse_config


def abi_from_wheel(wheel: Path) -> TorchABI:
    record = read_wheel(wheel).abi_record
    if not record or not record.get("torch"):
        raise AbistampError(f"`{wheel.name}` (given to `--abi-from`) carries no abistamp record",
                            "pass a wheel that abistamp stamped, or use `--python ENV`")
    return to_abi(record)


def plan_stamp(wheel: WheelInfo, abi: TorchABI, settings: Settings) -> Stamp:
    """The stamp for one wheel, from what read_wheel read of it with what profiles read."""
    # nvcc and the arch list belong to a build; this wheel's build is unknown.
    abi = dataclasses.replace(abi, nvcc=None, cuda_arch_list=None)
    mode = settings.local_version
    reason = (f"`local-version` is `{mode}`" if mode != "auto"
              else "stamping a finished wheel: no frontend holds its metadata")
    pin_req = torch_pin(abi, settings.pin)
    facts: dict[str, Any] = {"stamped_after_build": True}
    profile = next((found for p in all_profiles()
                    if (found := p.finished_wheel(wheel, abi)) is not None), None)
    if profile is not None:
        facts["profile"] = profile
    return make_stamp(settings, abi, wheel, apply_label=mode != "never", reason=reason,
                      pin=str(pin_req) if pin_req else None, build_facts=facts)


def stamp_files(wheels: list[Path], abi: TorchABI, out_dir: Path | None,
                config: ConfigSettings, project: Path | None) -> list[Path]:
    settings = Settings.load(project, config)
    results = []
    files = wheel_files(all_profiles())
    for wheel in wheels:
        info = read_wheel(wheel, files)
        results.append(stamp_wheel(info, out_dir or wheel.parent, plan_stamp(info, abi, settings)))
    return results


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("Stamp wheels built without abistamp (plain setuptools, downloaded) with "
    "the ABI of an environment's torch, by the backend's rules and code.")
EPILOG = ("examples:\n"
    "  abistamp stamp dist/*.whl --python .venv\n"
    "  abistamp stamp other.whl --abi-from wheelhouse/pt213cpu/tiny_ext-*.whl -o out/\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", metavar="WHEEL")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--python", metavar="PATH",
                     help="the environment whose torch the wheels were built against "
                     "(its python is run once to read torch's C++ ABI)")
    src.add_argument("--abi-from", metavar="WHEEL",
                     help="take the ABI from the record of a wheel abistamp stamped")
    p.add_argument("-o", "--out-dir", metavar="DIR", help="default: beside each wheel")
    p.add_argument("-C", "--config-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="abistamp settings (label, pin, build-number, local-version...)")
    p.add_argument("--project", metavar="DIR",
                   help="read [tool.abistamp] from this project's pyproject.toml")


def run(args: argparse.Namespace) -> int:
    from .envs import detect_in, resolve_python

    wheels = [Path(w) for w in args.wheels]
    for w in wheels:
        if not w.is_file():
            raise AbistampError(f"`{w}` does not exist", "check the path")
    abi = abi_from_wheel(Path(args.abi_from)) if args.abi_from else \
        detect_in(resolve_python(args.python))
    out_dir = Path(args.out_dir) if args.out_dir else None
    project = Path(args.project) if args.project else None
    results = stamp_files(wheels, abi, out_dir, parse_config(args.config_setting), project)
    for src, dest in zip(wheels, results):
        print(f"{src.name} -> {dest}")
    return EXIT_OK
