"""Names derived from an ABI: the label, the stamped version, the build tag and the torch pin.

All parsing and validation goes through ``packaging``; nothing here hand-parses versions.
"""

from __future__ import annotations

import re
import string
import sys

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .abi import TorchABI
from .errors import AbistampError

TEMPLATE_FIELDS = ("major", "minor", "patch", "accelerator", "cuda", "cxx11abi", "python")
_LOCAL_LABEL = re.compile(r"^[a-z0-9]+(?:\.[a-z0-9]+)*$")
# A sample ABI to check templates against before any torch is found.
_SAMPLES = (
    TorchABI("2.13.0+cpu", cxx11abi=True),
    TorchABI("2.14.1", cuda="13.0", cxx11abi=True),
    TorchABI("2.5.1+rocm6.2", hip="6.2.41133", cxx11abi=False),
)


def template_fields(abi: TorchABI) -> dict[str, str]:
    return {
        "major": str(abi.major),
        "minor": str(abi.minor),
        "patch": str(abi.patch),
        "accelerator": abi.accelerator,
        "cuda": (abi.cuda or "").replace(".", ""),
        "cxx11abi": "" if abi.cxx11abi is None else str(int(abi.cxx11abi)),
        "python": f"cp{sys.version_info[0]}{sys.version_info[1]}",
    }


def render_label(template: str, abi: TorchABI, where: str = "`label`") -> str:
    """The ABI label for this torch: `pt213cpu`. Lower-cased; must be a PEP 440 local label."""
    try:
        label = template.format(**template_fields(abi)).lower()
    except (KeyError, IndexError, ValueError) as e:
        raise AbistampError(
            f"{where} = {template!r} is not a valid template ({type(e).__name__}: {e})",
            "use only the fields " + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS),
        ) from None
    if not _LOCAL_LABEL.match(label):
        raise AbistampError(
            f"{where} = {template!r} gives `{label}` for torch {abi.torch_version}, which is not "
            "a PEP 440 local version label (letters, digits and single dots, starting and ending "
            "with a letter or digit)",
            "drop the characters outside [a-z0-9.] from the template",
        )
    normal = Version(f"0+{label}").local
    if normal != label:
        # PEP 440 drops leading zeros of all-digit segments: the version would say `213` where
        # the folder, the build tag and the record say `0213`, and a restamp would not see its
        # own label.
        raise AbistampError(
            f"{where} = {template!r} gives `{label}` for torch {abi.torch_version}, which PEP 440 "
            f"normalises to `{normal}`: an all-digit part may not start with 0",
            "start the template with a letter (as in `pt{major}{minor}{accelerator}`)",
        )
    return label


def check_template(template: str, where: str) -> None:
    """Fail early on a template that cannot give a valid label or build tag."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise AbistampError(f"{where} = {template!r} is not a valid template ({e})",
                            "close every `{` with `}`; write `{{` for a literal brace") from None
    unknown = [n for n in names if n not in TEMPLATE_FIELDS]
    if unknown:
        from .settings_model import did_you_mean

        raise AbistampError(
            f"{where} = {template!r} uses the unknown field `{{{unknown[0]}}}`",
            did_you_mean(unknown[0], TEMPLATE_FIELDS, "known fields: " + ", ".join(
                "{" + f + "}" for f in TEMPLATE_FIELDS), "{", "}"),
        )
    for sample in _SAMPLES:
        label = render_label(template, sample, where)
        build_tag(1, label, where)


def stamped_version(version: str, label: str) -> str:
    """`1.0` + `pt213cpu` -> `1.0+pt213cpu`; `0.19.8+abc123` -> `0.19.8+abc123.pt213cpu`.

    A version that already carries this label is returned unchanged, so stamping twice is
    harmless.
    """
    parsed = Version(version)
    local = parsed.local
    if local is not None and (local == label or local.endswith("." + label)):
        return str(parsed)
    combined = f"{parsed.public}+{local}.{label}" if local else f"{parsed.public}+{label}"
    return str(Version(combined))


def build_tag(build_number: int | str, label: str, where: str = "`label`") -> str:
    """`1` + `pt213cpu` -> `1pt213cpu`. Dots are kept: a build tag may hold any non-dash."""
    tag = f"{build_number}{label}"
    if not re.match(r"^\d[^-\s]*$", tag):
        raise AbistampError(f"{where} gives the wheel build tag `{tag}`, which is not valid "
                            "(it must start with a digit and hold no `-`)",
                            "change the template or `build-number`")
    if label[:1].isdigit():
        # Installers read a build tag as (leading digits, rest): `1` + `213cpu` would be
        # build number 1213, and a rebuild as 2 would sort below it.
        number = re.match(r"^\d+", tag)
        raise AbistampError(f"{where} gives the label `{label}`, which starts with a digit: in "
                            f"the build tag `{tag}` installers would read build number "
                            f"{number.group() if number else tag}, not {build_number}",
                            "start the template with a letter (as in "
                            "`pt{major}{minor}{accelerator}`)")
    return tag


def torch_pin(abi: TorchABI, mode: str) -> Requirement | None:
    """The Requires-Dist pin on torch for this ABI, per the `pin` setting."""
    if mode == "none":
        return None
    if mode == "auto":
        mode = "exact" if abi.local else "minor"
    if mode == "exact":
        return Requirement(f"torch=={abi.torch_version}")
    return Requirement(f"torch=={abi.major}.{abi.minor}.*")


def parse_torch_requirement(text: str, where: str) -> Requirement:
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        raise AbistampError(f"{where} = {text!r} is not a valid requirement: {e}",
                            'write it as a PEP 508 requirement, such as "torch==2.13.*"') from None
    if canonicalize_name(req.name) != "torch":
        raise AbistampError(f"{where} = {text!r} names `{req.name}`, not torch",
                            'write a torch requirement, such as "torch==2.13.*"')
    return req


def check_expected(abi: TorchABI, text: str, where: str) -> None:
    """Fail when the torch found does not satisfy the expected requirement."""
    req = parse_torch_requirement(text, where)
    try:
        ok = req.specifier.contains(Version(abi.torch_version), prereleases=True)
    except InvalidVersion:
        ok = False
    if not ok:
        raise AbistampError(
            f"the build found torch {abi.torch_version} ({abi.accelerator}), but {where} asks for "
            f"`{req}`",
            "install the torch that the setting names in the build environment, or change the "
            "setting",
        )
