"""Stamping real wheels: names, METADATA, WHEEL, RECORD, reproducibility, and bad wheels."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import zipfile
from pathlib import Path

import pytest
from installer.sources import WheelFile
from packaging.utils import parse_wheel_filename

from abistamp.core.abi import TorchABI
from abistamp.core.errors import AbistampError
from abistamp.core.labels import build_tag, render_label, stamped_version, torch_pin
from abistamp.core.record import Stamp, abi_fields
from abistamp.core.stamp import read_wheel, stamp_wheel

from .conftest import read_dist_file, read_record, run

CPU = TorchABI("2.13.0+cpu", cxx11abi=True)
CU130 = TorchABI("2.14.1", cuda="13.0", cxx11abi=True, nvcc="13.0")


def plan(abi: TorchABI, version: str | None) -> Stamp:
    label = render_label("pt{major}{minor}{accelerator}", abi)
    pin = str(torch_pin(abi, "auto"))
    return Stamp(version=stamped_version(version, label) if version else None,
                 build_tag=build_tag(1, label), requires=(pin,),
                 record={**abi_fields(abi), "label": label})


@pytest.fixture(scope="module")
def plain_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real setuptools wheel with a package, a script (.data) and a long description."""
    src = tmp_path_factory.mktemp("src")
    (src / "demo").mkdir()
    (src / "demo" / "__init__.py").write_text("VALUE = 1\n")
    (src / "demo" / "blob.bin").write_bytes(os.urandom(300_000))
    (src / "tool.sh").write_text("#!/bin/sh\necho demo\n")
    (src / "README.md").write_text("# demo\n\nThe body of METADATA.\n")
    (src / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='demo-pkg', version='1.2.0', packages=['demo'], scripts=['tool.sh'],\n"
        "      package_data={'demo': ['blob.bin']}, install_requires=['numpy>=1'],\n"
        "      long_description=open('README.md').read(),\n"
        "      long_description_content_type='text/markdown')\n")
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out,
         src], env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return next(out.glob("*.whl"))


def test_stamp_renames_and_rewrites_dist_info(plain_wheel: Path, tmp_path: Path) -> None:
    out = stamp_wheel(plain_wheel, tmp_path, plan(CPU, "1.2.0"))
    assert out.name == "demo_pkg-1.2.0+pt213cpu-1pt213cpu-py3-none-any.whl"
    _name, version, build, _ = parse_wheel_filename(out.name)
    assert (str(version), build) == ("1.2.0+pt213cpu", (1, "pt213cpu"))
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert "demo_pkg-1.2.0+pt213cpu.dist-info/METADATA" in names
    assert "demo_pkg-1.2.0+pt213cpu.data/scripts/tool.sh" in names
    assert not any(n.startswith("demo_pkg-1.2.0.") for n in names)
    assert names[-1].endswith("/RECORD"), "RECORD is written last"
    metadata = read_dist_file(out, "METADATA")
    assert "\nVersion: 1.2.0+pt213cpu\n" in metadata
    assert "Requires-Dist: numpy>=1\nRequires-Dist: torch==2.13.0+cpu\n" in metadata
    assert metadata.endswith("The body of METADATA.\n"), "the description body is kept"
    assert "Build: 1pt213cpu" in read_dist_file(out, "WHEEL")
    record = read_record(out)
    assert record["torch"] == "2.13.0+cpu" and record["original_version"] == "1.2.0"
    assert (record["python_tag"], record["abi_tag"], record["platform_tag"]) == (
        "py3", "none", "any")
    # An independent reader checks every RECORD hash and size.
    with WheelFile.open(out) as wf:
        wf.validate_record()
    # The unchanged members are byte-identical after the copy.
    with zipfile.ZipFile(plain_wheel) as a, zipfile.ZipFile(out) as b:
        assert a.read("demo/blob.bin") == b.read("demo/blob.bin")


def test_stamped_wheel_installs_with_pip(plain_wheel: Path, tmp_path: Path) -> None:
    out = stamp_wheel(plain_wheel, tmp_path / "w", plan(CPU, "1.2.0"))
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", target, out])
    assert (target / "demo" / "blob.bin").is_file()
    assert (target / "demo_pkg-1.2.0+pt213cpu.dist-info" / "abistamp.json").is_file()


def test_keep_version_still_stamps_build_tag_and_record(plain_wheel: Path, tmp_path: Path
                                                        ) -> None:
    out = stamp_wheel(plain_wheel, tmp_path, plan(CU130, None))
    assert out.name == "demo_pkg-1.2.0-1pt214cu130-py3-none-any.whl"
    assert "Requires-Dist: torch==2.14.*" in read_dist_file(out, "METADATA")
    assert read_record(out)["nvcc"] == "13.0"


def test_restamping_replaces_label_and_pin(plain_wheel: Path, tmp_path: Path) -> None:
    first = stamp_wheel(plain_wheel, tmp_path / "a", plan(CPU, "1.2.0"))
    second = stamp_wheel(first, tmp_path / "b", plan(CU130, "1.2.0"))
    assert second.name == "demo_pkg-1.2.0+pt214cu130-1pt214cu130-py3-none-any.whl"
    metadata = read_dist_file(second, "METADATA")
    assert "torch==2.13.0+cpu" not in metadata and "Requires-Dist: torch==2.14.*" in metadata
    with WheelFile.open(second) as wf:
        wf.validate_record()


def test_same_input_same_bytes(plain_wheel: Path, tmp_path: Path) -> None:
    digests = set()
    for i in range(2):
        out = stamp_wheel(plain_wheel, tmp_path / str(i), plan(CPU, "1.2.0"),
                          source_date_epoch=1700000000)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def _craft(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("evil", ["../escape.py", "/etc/evil.py", "pkg/../../escape.py",
                                  "pkg\\..\\..\\escape.py", "C:/evil.py", ".", "./"])
def test_member_paths_that_escape_are_refused(tmp_path: Path, evil: str) -> None:
    wheel = _craft(tmp_path / "bad-1.0-py3-none-any.whl", {
        "bad-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: bad\nVersion: 1.0\n",
        "bad-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\n",
        "bad-1.0.dist-info/RECORD": b"",
        evil: b"print('owned')\n",
    })
    out = tmp_path / "out"
    with pytest.raises(AbistampError, match="escapes the install root"):
        stamp_wheel(wheel, out, plan(CPU, "1.0"))
    assert not out.exists() or not any(out.iterdir())


def test_truncated_wheel_is_refused_and_nothing_is_written(plain_wheel: Path, tmp_path: Path
                                                           ) -> None:
    broken = tmp_path / plain_wheel.name
    broken.write_bytes(plain_wheel.read_bytes()[: plain_wheel.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AbistampError, match="corrupt or truncated"):
        stamp_wheel(broken, out, plan(CPU, "1.2.0"))
    assert list(out.iterdir()) == []


def test_not_a_wheel_name(tmp_path: Path) -> None:
    path = tmp_path / "thing.zip"
    path.write_bytes(b"PK")
    with pytest.raises(AbistampError, match="not a wheel filename"):
        read_wheel(path)


def _hashed(members: dict[str, bytes], dist_info: str) -> dict[str, bytes]:
    """Members plus a RECORD with every hash, as a standard backend writes it."""
    import base64

    rows = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
            f"{len(d)}" for n, d in members.items()]
    return {**members, f"{dist_info}/RECORD": ("\n".join(rows + [f"{dist_info}/RECORD,,"])
                                              + "\n").encode()}


def test_crlf_metadata_gets_its_pin_in_the_headers_and_keeps_its_body(tmp_path: Path) -> None:
    """A METADATA with CRLF line endings (written on Windows, or by hand) whose description
    holds lines that look like headers: only the headers change."""
    from packaging.metadata import Metadata

    body = "Version: 9 is what the README says\r\nRequires-Dist: not-a-dependency\r\n"
    metadata = ("Metadata-Version: 2.1\r\nName: crlf\r\nVersion: 1.0\r\n"
                "Requires-Dist: numpy\r\n\r\n" + body).encode()
    wheel = _craft(tmp_path / "crlf-1.0-py3-none-any.whl", _hashed({
        "crlf/__init__.py": b"",
        "crlf-1.0.dist-info/METADATA": metadata,
        "crlf-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }, "crlf-1.0.dist-info"))
    out = stamp_wheel(wheel, tmp_path / "out", plan(CPU, "1.0"))
    text = read_dist_file(out, "METADATA")
    head, body_after = text.split("\r\n\r\n", 1)
    assert body_after == body, "the description is untouched"
    assert head.split("\r\n") == ["Metadata-Version: 2.1", "Name: crlf", "Version: 1.0+pt213cpu",
                                   "Requires-Dist: numpy", "Requires-Dist: torch==2.13.0+cpu"]
    parsed = Metadata.from_email(text.encode(), validate=False)  # an independent reader
    assert [str(r) for r in parsed.requires_dist or []] == ["numpy", "torch==2.13.0+cpu"]
    assert str(parsed.version) == "1.0+pt213cpu"
    with WheelFile.open(out) as wf:
        wf.validate_record()


def test_a_corrupt_member_is_named_with_its_wheel(plain_wheel: Path, tmp_path: Path) -> None:
    """`stamp` and `repair` take many wheels: the message says which one, and which member."""
    broken = tmp_path / plain_wheel.name
    data = bytearray(plain_wheel.read_bytes())
    with zipfile.ZipFile(plain_wheel) as zf:
        first = zf.infolist()[0]
    data[first.header_offset:first.header_offset + 4] = b"XXXX"  # its local header
    broken.write_bytes(bytes(data))
    with pytest.raises(AbistampError) as caught:
        stamp_wheel(broken, tmp_path / "out", plan(CPU, "1.2.0"))
    assert f"`{broken}`" in str(caught.value) and f"`{first.filename}`" in str(caught.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_build_tag_off_keeps_the_wrapped_backends_own_tag(tmp_path: Path) -> None:
    """`build-tag = false` means abistamp adds none: a tag the project's backend gave its wheel
    (`bdist_wheel --build-number 7`) stays, and abistamp's own from an earlier stamp goes."""
    from abistamp.core.settings import Settings
    from abistamp.core.stamp import make_stamp

    wheel = _craft(tmp_path / "tagged-1.0-7-py3-none-any.whl", _hashed({
        "tagged/__init__.py": b"",
        "tagged-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tagged\nVersion: 1.0\n",
        "tagged-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nBuild: 7\n"
                                      b"Tag: py3-none-any\n",
    }, "tagged-1.0.dist-info"))
    off = Settings.load(tmp_path, {"abistamp.build-tag": "false"}, environ={})
    on = Settings.load(tmp_path, {}, environ={})

    def stamped(settings: Settings, src: Path, folder: str) -> Path:
        return stamp_wheel(src, tmp_path / folder, make_stamp(
            settings, CPU, src, apply_label=False, reason="test", pin=None, build_facts={}))

    kept = stamped(off, wheel, "off")
    assert kept.name == "tagged-1.0-7-py3-none-any.whl"
    assert "Build: 7" in read_dist_file(kept, "WHEEL")
    ours = stamped(on, wheel, "on")
    assert ours.name == "tagged-1.0-1pt213cpu-py3-none-any.whl"
    # Turned off on a wheel abistamp tagged before: its tag is abistamp's, so it goes.
    assert stamped(off, ours, "again").name == "tagged-1.0-py3-none-any.whl"


def test_metadata_fields_read_as_an_email_parser_does() -> None:
    from abistamp.core.stamp import metadata_fields

    data = (b"Metadata-Version: 2.1\r\nName: x\r\nrequires-dist: numpy\r\n"
            b"Requires-Dist: torch==2.13.*\r\nRequires-Python: >=3.10\r\n\r\n"
            b"Requires-Dist: in-the-description\r\n")
    assert metadata_fields(data, "Requires-Dist") == ["numpy", "torch==2.13.*"]
    assert metadata_fields(data, "requires-python") == [">=3.10"]
    assert metadata_fields(data, "Dynamic") == []


def test_the_record_model_matches_the_documented_schema(plain_wheel: Path, tmp_path: Path
                                                        ) -> None:
    """core/record.py knows every key docs/abi-record.md documents; a stamped wheel's record
    reads back as written, gives back its ABI, and a re-stamp from it changes only what asks."""
    from abistamp.core.record import FIELD_TYPES, from_json, restamp, to_abi, to_json

    docs = (Path(__file__).resolve().parent.parent / "docs" / "abi-record.md").read_text()
    table = docs.split("## Schema 1", 1)[1].split("###", 1)[0]
    documented = {k for row in table.splitlines() if row.startswith("| `")
                  for k in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])}
    assert documented == set(FIELD_TYPES)
    out = stamp_wheel(plain_wheel, tmp_path / "a", plan(CPU, "1.2.0"))
    record = read_wheel(out).abi_record
    assert record is not None and from_json(to_json(record), "x") == record
    assert to_abi(record) == CPU
    again = stamp_wheel(out, tmp_path / "b", restamp(record, build_tag="2pt213cpu"))
    assert again.name == "demo_pkg-1.2.0+pt213cpu-2pt213cpu-py3-none-any.whl"
    assert read_wheel(again).abi_record == {**record, "build_tag": "2pt213cpu"}


@pytest.mark.parametrize(("text", "words"), [
    ("[1]", "holds a JSON list, not an object"),
    ('{"torch": 2.13}', "`torch` is 2.13, not a string"),
    ('{"schema": true}', "`schema` is true, not an integer"),
    ('{"cuda": 13}', "`cuda` is 13, not a string or null"),
    ("{", "is not JSON"),
])
def test_a_malformed_record_is_refused_naming_the_key(text: str, words: str) -> None:
    from abistamp.core.record import from_json

    with pytest.raises(AbistampError, match=re.escape(words)) as e:
        from_json(text, "`w.whl`'s `abistamp.json`")
    assert str(e.value).startswith("`w.whl`'s `abistamp.json`") and e.value.fix
