"""`abistamp stamp`: stamp wheels built elsewhere with the ABI of a given torch.

The stamps are the backend's (label, local version, build tag, torch pin, ABI record), made by
the same functions (`labels`, `stamp.stamp_wheel`) from the same settings. Two decisions differ
because the wheel is finished: the local version label is added under `auto` (no frontend
holds this wheel's metadata), and the pin is added (the stamped wheel is a new artifact).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from abistamp.core.abi import TorchABI
from abistamp.core.errors import AbistampError
from abistamp.core.labels import torch_pin
from abistamp.core.plan import make_stamp
from abistamp.core.settings import ConfigSettings, Settings
from abistamp.core.stamp import Stamp, read_wheel, stamp_wheel


def abi_from_wheel(wheel: Path) -> TorchABI:
    record = read_wheel(wheel).abi_record
    if not record or not record.get("torch"):
        raise AbistampError(f"`{wheel.name}` (given to `--abi-from`) carries no abistamp record",
                            "pass a wheel that abistamp stamped, or use `--python ENV`")
    return TorchABI.from_record(record)


def plan_stamp(wheel: Path, abi: TorchABI, settings: Settings) -> Stamp:
    # nvcc and the arch list belong to a build; this wheel's build is unknown.
    abi = dataclasses.replace(abi, nvcc=None, cuda_arch_list=None)
    mode = settings.local_version
    reason = (f"`local-version` is `{mode}`" if mode != "auto"
              else "stamping a finished wheel: no frontend holds its metadata")
    pin_req = torch_pin(abi, settings.pin)
    facts: dict[str, Any] = {"stamped_after_build": True}
    profile = deepspeed_profile(wheel, abi)
    if profile is not None:
        facts["profile"] = profile
    return make_stamp(settings, abi, wheel, apply_label=mode != "never", reason=reason,
                      pin=str(pin_req) if pin_req else None, build_facts=facts)


def deepspeed_profile(wheel: Path, abi: TorchABI) -> dict[str, Any] | None:
    """For a DeepSpeed wheel: check its torch_info against the ABI, as the backend does."""
    from abistamp.core.profiles.deepspeed import CPU_OPS, wheel_facts

    facts = wheel_facts(wheel, abi, required=False)
    if facts is None:
        return None
    return {
        **facts,
        # What -march its CPU ops were compiled with is not in the wheel: unknown.
        "cpu": None,
        "cpu_ops_unknown_flags": [op for op in facts["installed_ops"] if op in CPU_OPS] or None,
        "environ": {},
    }


def stamp_files(wheels: list[Path], abi: TorchABI, out_dir: Path | None,
                config: ConfigSettings, project: Path | None) -> list[Path]:
    settings = Settings.load(project or Path("/nonexistent-abistamp-project"), config)
    results = []
    for wheel in wheels:
        stamp = plan_stamp(wheel, abi, settings)
        results.append(stamp_wheel(wheel, out_dir or wheel.parent, stamp))
    return results
