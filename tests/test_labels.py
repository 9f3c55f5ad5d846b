"""Labels, stamped versions, build tags and pins, including property tests (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from abistamp.core.abi import TorchABI
from abistamp.core.errors import AbistampError
from abistamp.core.labels import (
    build_tag,
    check_expected,
    render_label,
    stamped_version,
    torch_pin,
)
from abistamp.core.record import abi_fields, to_abi
from abistamp.core.stamp import wheel_filename

CPU = TorchABI("2.13.0+cpu", cxx11abi=True)
CU130 = TorchABI("2.14.1", cuda="13.0", cxx11abi=True)
CU124 = TorchABI("2.5.1+cu124", cuda="12.4", cxx11abi=False)
ROCM = TorchABI("2.5.1+rocm6.2", hip="6.2.41133-0")


@pytest.mark.parametrize(("abi", "label"), [
    (CPU, "pt213cpu"), (CU130, "pt214cu130"), (CU124, "pt25cu124"), (ROCM, "pt25rocm6.2"),
])
def test_default_label_is_the_pyg_convention(abi: TorchABI, label: str) -> None:
    assert render_label("pt{major}{minor}{accelerator}", abi) == label


def test_flash_attn_style_template() -> None:
    label = render_label("cu{cuda}torch{major}.{minor}cxx11abi{cxx11abi}", CU124)
    assert label == "cu124torch2.5cxx11abi0"


@pytest.mark.parametrize(("version", "expected"), [
    ("1.0", "1.0+pt213cpu"),
    ("0.19.8+abc1234", "0.19.8+abc1234.pt213cpu"),  # DeepSpeed in a git checkout
    ("1.0+pt213cpu", "1.0+pt213cpu"),  # stamping twice changes nothing
    ("2.0rc1", "2.0rc1+pt213cpu"),
])
def test_stamped_version(version: str, expected: str) -> None:
    assert stamped_version(version, "pt213cpu") == expected


def test_pins() -> None:
    assert str(torch_pin(CPU, "auto")) == "torch==2.13.0+cpu"  # has a local label: exact
    assert str(torch_pin(CU130, "auto")) == "torch==2.14.*"  # no label: the minor boundary
    assert str(torch_pin(CU130, "exact")) == "torch==2.14.1"
    assert str(torch_pin(CPU, "minor")) == "torch==2.13.*"
    assert torch_pin(CPU, "none") is None
    # `==2.14.1` also admits 2.14.1+cpu: only a labelled pin tells two such torches apart.
    assert Requirement("torch==2.14.1").specifier.contains("2.14.1+cpu")
    assert not Requirement("torch==2.5.1+cu124").specifier.contains("2.5.1+cu121")


def test_expected_torch_mismatch_is_an_error() -> None:
    check_expected(CPU, "torch==2.13.*", "`torch`")
    with pytest.raises(AbistampError, match=r"found torch 2.13.0\+cpu .* asks for `torch==2.14.\*`"):
        check_expected(CPU, "torch==2.14.*", "`torch`")


def test_build_tag_must_start_with_a_digit() -> None:
    assert build_tag(1, "pt213cpu") == "1pt213cpu"
    with pytest.raises(AbistampError):
        build_tag("x", "pt213cpu")


versions = st.builds(
    lambda rel, local: ".".join(map(str, rel)) + (f"+{local}" if local else ""),
    st.lists(st.integers(0, 99), min_size=2, max_size=3),
    st.one_of(st.none(), st.sampled_from(["cpu", "cu121", "cu130", "rocm6.2", "xpu"])),
)
cudas = st.one_of(st.none(), st.builds(lambda a, b: f"{a}.{b}", st.integers(9, 13),
                                       st.integers(0, 9)))
# Each template, and whether every torch must get a label from it: those that start with a
# letter always give one; an all-digit start is refused (a build number would swallow it).
TEMPLATES = {
    "pt{major}{minor}{accelerator}": True, "cu{cuda}torch{major}.{minor}": True,
    "{accelerator}": True, "torch{major}{minor}{patch}.{accelerator}.abi{cxx11abi}": True,
    "{python}.pt{major}{minor}": True,
    "{cxx11abi}{major}{minor}": False, "{major}.{minor}.{patch}": False,  # 0213 / 1213 / 2.13.0
}
templates = st.sampled_from(sorted(TEMPLATES))


def test_every_accepted_stamp_parses_and_round_trips() -> None:
    """Property test over torch versions, CUDA versions, ABI flags, templates and project
    versions: a template that must give a label always does, and every label given parses and
    round-trips; a refused one is refused for the reason its template predicts."""
    accepted: list[str] = []
    refused: list[str] = []

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(versions, cudas, st.booleans(), templates, st.sampled_from(["1.0", "0.19.8+g1a2b"]))
    def check(torch: str, cuda: str | None, abi_flag: bool, template: str, project: str
              ) -> None:
        abi = TorchABI(torch, cuda=cuda, cxx11abi=abi_flag)
        if not TEMPLATES[template]:
            with pytest.raises(AbistampError, match="starts with a digit|normalises to"):
                build_tag(1, render_label(template, abi))
            refused.append(template)
            return
        label = render_label(template, abi)
        tag = build_tag(1, label)
        accepted.append(template)
        version = stamped_version(project, label)
        parsed = Version(version)
        assert parsed.public == Version(project).public
        assert parsed.local is not None and parsed.local.endswith(label)
        assert stamped_version(version, label) == version  # stamping twice changes nothing
        assert Version(version) > Version(Version(project).public)  # labelled sorts after bare
        _name, ver, build, _ = parse_wheel_filename(
            wheel_filename("pkg", version, tag, "cp311-cp311-linux_x86_64"))
        assert (str(ver), build[0]) == (version, 1)
        pin = torch_pin(abi, "auto")
        assert pin is not None and pin.specifier.contains(abi.torch_version)
        assert to_abi(abi_fields(abi)) == abi

    check()
    # The property was checked on many stamps, of every template that must give one.
    assert len(accepted) >= 100, (len(accepted), len(refused))
    assert set(accepted) == {t for t, ok in TEMPLATES.items() if ok}
    assert set(refused) == {t for t, ok in TEMPLATES.items() if not ok}


def test_a_label_that_pep440_would_rewrite_is_refused() -> None:
    """`0213` is `213` once in a version: the folder, the build tag and the record would
    disagree with the version, and a restamp would add the label a second time."""
    with pytest.raises(AbistampError, match=r"gives `0213` .* normalises to `213`"):
        render_label("{cxx11abi}{major}{minor}", TorchABI("2.13.0+cpu", cxx11abi=False))
    label = render_label("{cxx11abi}{major}{minor}", TorchABI("2.13.0+cpu", cxx11abi=True))
    assert label == "1213"  # a valid local label, but not after a build number:
    with pytest.raises(AbistampError, match="installers would read build number 11213, not 1"):
        build_tag(1, label)
