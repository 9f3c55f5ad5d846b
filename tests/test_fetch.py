"""`abistamp build NAME==VERSION` fetches the release's sdist through the simple repository API
(cli/fetch.py, unearth), running none of its code: against indexes served on 127.0.0.1 (PEP 503
HTML, PEP 691 JSON, one behind a password) and find-links folders, and end to end with an sdist
whose setup.py leaves a marker when it runs without torch.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from abistamp.cli.fetch import fetch_sdist
from abistamp.cli.fetchconfig import DEFAULT_INDEX, fetch_config, read_pip_config
from abistamp.core.errors import AbistampError

from .cli_support import cli, manifest, summary_rows
from .conftest import Env, clean_env, read_record, run
from .index_server import PASSWORD, USER, Dist, IndexServer, sdist_bytes, serve

# No pip or uv configuration of this machine: only what each test names.
BARE = {"PIP_CONFIG_FILE": os.devnull, "HOME": "/nonexistent"}


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[IndexServer]:
    with serve(tmp_path / "served") as s:
        yield s


def fetch(spec: str, cache: Path, *, index: str | None = None, find_links: list[str] = (),
          environ: dict[str, str] | None = None, said: list[str] | None = None):  # type: ignore[no-untyped-def]
    env = dict(BARE, PIP_NO_INDEX="1") if index is None and environ is None else \
        dict(environ or BARE)
    config = fetch_config(index, [], list(find_links), env)
    return fetch_sdist(spec, config, cache, (said if said is not None else []).append)


SCATTER = sdist_bytes("torch_scatter", "2.1.2")


def test_pep503_html_index_and_a_name_spelled_differently(server: IndexServer, tmp_path: Path
                                                         ) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.1.tar.gz", b"older"),
                                     Dist("torch_scatter-2.1.2.tar.gz", SCATTER)])
    said: list[str] = []
    got = fetch("Torch_Scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/html/simple",
                said=said)
    assert got.path.read_bytes() == SCATTER
    assert got.sha256 == hashlib.sha256(SCATTER).hexdigest()
    assert got.url == f"{server.url}/files/torch_scatter-2.1.2.tar.gz"
    assert got.checked == "sha256 from the index verified" and not got.cached
    assert got.path.is_relative_to(tmp_path / "cache")
    assert "/html/simple/torch-scatter/" in server.requests  # the normalised name's page
    assert any("versions 2.1.1, 2.1.2" in line for line in said), said
    # The cache answers the second time: the page is read again, the file is not.
    server.requests.clear()
    again = fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/html/simple")
    assert again.cached and again.path == got.path
    assert server.requests == ["/html/simple/torch-scatter/"]


def test_pep691_json_index(server: IndexServer, tmp_path: Path) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.2.tar.gz", SCATTER)])
    got = fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/json/simple")
    assert got.path.read_bytes() == SCATTER and got.checked == "sha256 from the index verified"
    assert "/json/simple/torch-scatter/" in server.requests


def test_find_links_folder_has_no_hash_so_it_is_computed(tmp_path: Path) -> None:
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "torch_scatter-2.1.2.tar.gz").write_bytes(SCATTER)
    (folder / "torch_scatter-2.1.1.tar.gz").write_bytes(b"older")
    got = fetch("torch-scatter==2.1.2", tmp_path / "cache", find_links=[str(folder)])
    assert got.path == folder / "torch_scatter-2.1.2.tar.gz"
    assert got.sha256 == hashlib.sha256(SCATTER).hexdigest()
    assert got.checked == "a find-links folder gives no hash: sha256 computed here, not verified"


def test_hash_mismatch_is_refused_and_nothing_is_kept(server: IndexServer, tmp_path: Path
                                                     ) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.2.tar.gz", SCATTER,
                                          listed_sha256="0" * 64)])
    with pytest.raises(AbistampError) as e:
        fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/html/simple")
    text = e.value.one_line()
    assert f"the download of {server.url}/files/torch_scatter-2.1.2.tar.gz does not match " \
           f"the index's sha256 (index {'0' * 64}, got {hashlib.sha256(SCATTER).hexdigest()})" \
           ": nothing was kept" in text, text
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_yanked_file_is_used_for_an_exact_pin_with_a_warning(server: IndexServer,
                                                              tmp_path: Path) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.2.tar.gz", SCATTER,
                                          yanked="broken on Windows")])
    said: list[str] = []
    got = fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/json/simple",
                said=said)
    assert got.yanked == "broken on Windows" and got.path.read_bytes() == SCATTER
    assert ("WARNING: `torch_scatter-2.1.2.tar.gz` is yanked (broken on Windows); used because "
            "`torch-scatter==2.1.2` pins it exactly (PEP 592)") in said


def test_a_missing_version_names_every_place_searched(server: IndexServer, tmp_path: Path
                                                     ) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.1.tar.gz", b"older")])
    folder = tmp_path / "links"
    folder.mkdir()
    env = dict(BARE, PIP_EXTRA_INDEX_URL=f"{server.url}/json/simple")
    with pytest.raises(AbistampError) as e:
        fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/html/simple",
              find_links=[str(folder)], environ=env)
    text = e.value.one_line()
    assert text.startswith("no sdist of `torch-scatter==2.1.2` found; searched "
                           f"{server.url}/html/simple/torch-scatter/ (versions 2.1.1); "
                           f"{server.url}/json/simple/torch-scatter/ (versions 2.1.1); "
                           f"{folder} (no files of it)"), text


def test_a_wheel_only_release_has_its_own_error(server: IndexServer, tmp_path: Path) -> None:
    wheel = "torch_scatter-2.1.2-cp311-cp311-linux_x86_64.whl"
    server.publish("torch-scatter", [Dist(wheel, b"a wheel")])
    with pytest.raises(AbistampError) as e:
        fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/html/simple")
    assert e.value.problem.startswith(f"`torch-scatter==2.1.2` is published only as wheels "
                                      f"({wheel}): no sdist to build from"), e.value.problem
    assert "abistamp stamp" in (e.value.fix or "")


def test_credentials_in_the_url_and_in_netrc_reach_a_private_index(
        server: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.2.tar.gz", SCATTER)])
    host = server.url.removeprefix("http://")
    with pytest.raises(AbistampError) as e:  # no credentials: the error says why
        fetch("torch-scatter==2.1.2", tmp_path / "c0", index=f"{server.url}/private/simple")
    assert "401" in e.value.problem, e.value.problem
    got = fetch("torch-scatter==2.1.2", tmp_path / "c1",
                index=f"http://{USER}:{PASSWORD}@{host}/private/simple")
    assert got.path.read_bytes() == SCATTER
    assert PASSWORD not in got.url
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # read from the process's environment
    got = fetch("torch-scatter==2.1.2", tmp_path / "c2", index=f"{server.url}/private/simple")
    assert got.path.read_bytes() == SCATTER


def test_sources_combine_as_pip_combines_them(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://pip.example/simple\n"
                    "extra-index-url = https://extra1.example/simple\n"
                    "  https://extra2.example/simple\nfind-links = /srv/wheels\n"
                    "cert = /etc/custom-ca.pem\n[install]\ntimeout = 42\n")
    env = {"PIP_CONFIG_FILE": str(conf), "HOME": "/nonexistent",
           "UV_INDEX": "named=https://uv-index.example/simple https://uv-bare.example/simple",
           "UV_EXTRA_INDEX_URL": "https://uv-extra.example/simple",
           "UV_FIND_LINKS": "/srv/a,/srv/b", "UV_DEFAULT_INDEX": "https://uv-default.example/s"}
    config = fetch_config(None, ["https://cmd-extra.example/simple"], ["/cmd/links"], env)
    assert [(p.url, p.kind) for p in config.places] == [
        ("https://pip.example/simple", "index"),
        ("https://cmd-extra.example/simple", "index"),
        ("https://extra1.example/simple", "index"),
        ("https://extra2.example/simple", "index"),
        ("https://uv-extra.example/simple", "index"),
        ("https://uv-index.example/simple", "index"),
        ("https://uv-bare.example/simple", "index"),
        ("/cmd/links", "find-links"),
        ("/srv/wheels", "find-links"),
        ("/srv/a", "find-links"),
        ("/srv/b", "find-links"),
    ]
    assert config.places[0].origin == f"pip's `index-url` (`{conf}` [global])"
    assert config.cert == "/etc/custom-ca.pem" and config.timeout == 42.0
    # The command's --index-url wins over pip's; PIP_* variables win over pip's files.
    config = fetch_config("https://cmd.example/simple", [], [],
                          {**env, "PIP_FIND_LINKS": "/env/links"})
    assert config.places[0].url == "https://cmd.example/simple"
    assert [p.url for p in config.places if p.kind == "find-links"] == [
        "/env/links", "/srv/a", "/srv/b"]
    # Without pip's index-url, uv's default index is the primary one; without it, PyPI.
    no_pip = {k: v for k, v in env.items() if k != "PIP_CONFIG_FILE"} | {
        "PIP_CONFIG_FILE": os.devnull}
    assert fetch_config(None, [], [], no_pip).places[0].url == "https://uv-default.example/s"
    assert fetch_config(None, [], [], BARE).places[0].url == DEFAULT_INDEX
    assert read_pip_config({**BARE, "PIP_TRUSTED_HOST": "h"})["trusted-host"] == (
        "h", "`PIP_TRUSTED_HOST`")


# --- end to end through `abistamp build` ---------------------------------------------------------

MARKER_SETUP = """\
import os
try:
    import torch  # noqa: F401
except ImportError:
    # What `pip download --no-binary :all:` did: run this file in an environment without torch.
    open({marker!r}, "w").write("setup.py ran without torch")
    raise
flavour = os.getenv("MARKER_PROBE_FLAVOUR", "plain")
from setuptools import setup
setup(name="marker-probe", version="1.0", py_modules=[])
"""


@pytest.mark.slow
def test_fetch_and_build_run_no_project_code_without_torch(server: IndexServer, tmp_path: Path,
                                                           env213: Env) -> None:
    marker = tmp_path / "MARKER"
    data = sdist_bytes("marker_probe", "1.0", MARKER_SETUP.format(marker=str(marker)))
    server.publish("marker-probe", [Dist("marker_probe-1.0.tar.gz", data)])
    wheelhouse, work = tmp_path / "wh", tmp_path / "work"
    # A build switch exported in the shell (read by setup.py, not in the key) is listed.
    env = clean_env(PIP_CONFIG_FILE=os.devnull, MARKER_PROBE_FLAVOUR="fancy")
    result = cli("build", "marker-probe==1.0", "--python", env213.python, "--index-url",
                 f"{server.url}/json/simple", "-o", wheelhouse, "--work-dir", work,
                 "--cache-dir", tmp_path / "cache", env=env)
    assert not marker.exists(), marker.read_text()
    assert summary_rows(result.stdout)[f"--python {env213.python}"][0] == "built"
    assert ("the shell sets MARKER_PROBE_FLAVOUR=fancy, which this build may read but the "
            "variant's key does not hold") in result.stderr
    (entry,) = manifest(wheelhouse)["variants"].values()
    assert entry["source"] == {
        "kind": "requirement", "spec": "marker-probe==1.0",
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "url": f"{server.url}/files/marker_probe-1.0.tar.gz",
        "sha256": hashlib.sha256(data).hexdigest(), "checked": "sha256 from the index verified"}
    assert entry["unkeyed_environment"] == {"MARKER_PROBE_FLAVOUR": "fancy"}
    assert read_record(wheelhouse / entry["wheel"])["torch"] == "2.13.0+cpu"
    # Control: pip's way of fetching (it prepares the metadata) runs setup.py without torch.
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "--index-url", f"{server.url}/json/simple", "-d",
         tmp_path / "pip-dl", "marker-probe==1.0"], env=env, check=False)
    assert marker.read_text() == "setup.py ran without torch"
    # A version the index lacks: the one-line error names the URL and the cause, the log what
    # was tried.
    failed = cli("build", "marker-probe==2.0", "--python", env213.python, "--index-url",
                 f"{server.url}/json/simple", "-o", wheelhouse, "--work-dir", work,
                 "--cache-dir", tmp_path / "cache", env=env, check=False)
    assert failed.returncode == 1
    assert (f"FAILED: no sdist of `marker-probe==2.0` found; searched {server.url}/json/simple/"
            "marker-probe/ (versions 1.0)") in failed.stderr, failed.stderr
    (log,) = [line.split("log: ", 1)[1] for line in failed.stdout.splitlines()
              if "log: " in line]
    text = Path(log).read_text()
    assert "looking for the sdist of marker-probe==2.0" in text
    assert f"{server.url}/json/simple/marker-probe/ [index; `--index-url`]: versions 1.0" in text


def test_a_file_the_index_lists_but_cannot_serve(server: IndexServer, tmp_path: Path) -> None:
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.2.tar.gz", SCATTER)])
    (server.root / "files" / "torch_scatter-2.1.2.tar.gz").unlink()
    with pytest.raises(AbistampError) as e:
        fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/html/simple")
    assert e.value.problem.startswith(
        f"could not download {server.url}/files/torch_scatter-2.1.2.tar.gz: ")
    assert "404" in e.value.problem, e.value.problem
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_an_unreadable_pip_configuration_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("index-url = https://no.section/simple\n")
    with pytest.raises(AbistampError) as e:
        read_pip_config({"PIP_CONFIG_FILE": str(conf), "HOME": "/nonexistent"})
    assert e.value.problem.startswith(f"pip's configuration file `{conf}` cannot be read: ")


def test_a_yanked_file_without_a_reason(server: IndexServer, tmp_path: Path) -> None:
    """PEP 691 says `"yanked": true` when no reason is given."""
    server.publish("torch-scatter", [Dist("torch_scatter-2.1.2.tar.gz", SCATTER, yanked="")])
    said: list[str] = []
    got = fetch("torch-scatter==2.1.2", tmp_path / "cache", index=f"{server.url}/json/simple",
                said=said)
    assert got.yanked == ""
    assert any("is yanked (no reason given)" in line for line in said), said
