"""`abistamp index`: two wheelhouses built by separate `abistamp build` runs (tiny-ext compiled
against torch 2.13.0+cpu and against the CUDA 13.0 build of torch 2.14.1) merged into one;
the pages checked link by link; a conflicting duplicate refused; adding a cell rewrites only
what changed; pip and uv installing from the merged index; and the single-index layout, where
a uv project's extras get the right wheel from one index by resolution alone.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import shutil
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from .cli_support import cli, copy_wheelhouse, fresh_env, manifest
from .conftest import Env, Result, clean_env, read_dist_file, run, uv_bin

pytest_plugins = ["tests.cli_fixtures"]

CPU = "tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl"
CUDA = "tiny_ext-0.3.0+pt214cu130-1pt214cu130-cp311-cp311-linux_x86_64.whl"
RUN_OP = ("import json, torch, tiny_ext; print(json.dumps([tiny_ext.scale_add(torch.arange(3.0), "
          "2.0).tolist(), tiny_ext.compiled_torch_version(), torch.__version__]))")
LOCK = ".abistamp-wheelhouse.lock"


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v for k, v in attrs if tag == "a" and k == "href" and v]


def links(page: Path) -> list[tuple[Path, str]]:
    """Each link of an HTML page as (the file it names, its fragment), resolved as a browser or
    an installer does: relative to the page, folders served by their index.html."""
    parser = _Links()
    parser.feed(page.read_text())
    out = []
    for href in parser.hrefs:
        assert "://" not in href and not href.startswith("/"), f"{page}: {href} is not relative"
        url, _, fragment = urllib.parse.urljoin(page.as_uri(), href).partition("#")
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        out.append((path / "index.html" if url.endswith("/") else path, fragment))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under root: (inode, mtime in ns, sha256). The lock file is not content."""
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, sha256(p))
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK}


@pytest.fixture(scope="module")
def cells(tiny_wheelhouse: tuple[Path, Path, Result], tiny_wheelhouse_214: tuple[Path, Result]
          ) -> tuple[Path, Path]:
    """The two wheelhouses, each written by its own `abistamp build` run."""
    a, b = tiny_wheelhouse[0], tiny_wheelhouse_214[0]
    assert [p.name for p in a.glob("*/*.whl")] == [CPU]
    assert [p.name for p in b.glob("*/*.whl")] == [CUDA]
    return a, b


@pytest.fixture(scope="module")
def merged(cells: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("merged") / "public"
    return out, cli("index", *cells, "-o", out)


@pytest.mark.slow
@pytest.mark.cuda
def test_merge_writes_every_page_with_working_links(cells: tuple[Path, Path],
                                                    merged: tuple[Path, Result]) -> None:
    out, result = merged
    a, b = (c.resolve() for c in cells)
    assert f"{a}: 1 wheel(s) added, 0 already there\n  + pt213cpu/{CPU}" in result.stdout
    assert f"{b}: 1 wheel(s) added, 0 already there\n  + pt214cu130/{CUDA}" in result.stdout
    assert "2 wheel(s) in 2 ABI folder(s) (pt213cpu, pt214cu130)" in result.stdout
    files = sorted(snapshot(out))
    assert files == ["abistamp-wheelhouse.json", "all.html", "index.html",
                     "pt213cpu/index.html", "pt213cpu/simple/index.html",
                     "pt213cpu/simple/tiny-ext/index.html", f"pt213cpu/{CPU}",
                     "pt214cu130/index.html", "pt214cu130/simple/index.html",
                     "pt214cu130/simple/tiny-ext/index.html", f"pt214cu130/{CUDA}",
                     "simple/index.html", "simple/tiny-ext/index.html"]
    wheels_linked: dict[str, set[str]] = {}
    for page in out.rglob("*.html"):
        for target, fragment in links(page):
            assert target.is_file(), f"{page.relative_to(out)} links to missing {target}"
            assert out.resolve() in target.resolve().parents, target
            if target.suffix == ".whl":
                assert fragment == f"sha256={sha256(target)}", (page, target)
                wheels_linked.setdefault(page.relative_to(out).as_posix(), set()).add(
                    target.name)
    assert wheels_linked == {
        "all.html": {CPU, CUDA}, "simple/tiny-ext/index.html": {CPU, CUDA},
        "pt213cpu/index.html": {CPU}, "pt213cpu/simple/tiny-ext/index.html": {CPU},
        "pt214cu130/index.html": {CUDA}, "pt214cu130/simple/tiny-ext/index.html": {CUDA}}
    data = manifest(out)
    # Provenance by folder name (in CI, the artifact's), not by path: nothing of where this
    # machine kept them is published.
    assert data["files"][f"pt213cpu/{CPU}"]["origin"] == a.name == "wheelhouse"
    assert data["files"][f"pt214cu130/{CUDA}"]["origin"] == b.name
    assert data["merged_from"] == ["wheelhouse"]
    variants = {e["label"]: e for e in data["variants"].values()}
    assert variants["pt213cpu"]["origin"] == a.name
    assert variants["pt214cu130"]["torch"]["version"] == "2.14.1"
    # The merged manifest is a wheelhouse's: `abistamp build -o` on it skips both variants.
    for cell in cells:
        entry = next(iter(manifest(cell)["variants"].values()))
        assert data["variants"][entry["key"]]["wheel"] == entry["wheel"]


@pytest.mark.slow
@pytest.mark.cuda
def test_a_conflicting_duplicate_is_refused(cells: tuple[Path, Path], merged: tuple[Path, Result],
                                            tmp_path: Path) -> None:
    a, b = cells
    # A re-stamp with another pin: the same filename, other bytes (what a rebuild on another
    # machine without a new build number gives).
    bad = copy_wheelhouse(b, tmp_path / "bad")
    cli("stamp", b / "pt214cu130" / CUDA, "--abi-from", b / "pt214cu130" / CUDA,
        "-C", "abistamp.pin=exact", "-o", tmp_path / "restamped")
    (restamped,) = (tmp_path / "restamped").glob("*.whl")
    assert restamped.name == CUDA and sha256(restamped) != sha256(b / "pt214cu130" / CUDA)
    shutil.copyfile(restamped, bad / "pt214cu130" / CUDA)

    out = copy_wheelhouse(merged[0], tmp_path / "out")
    before = snapshot(out)
    refused = cli("index", a, bad, "-o", out, check=False)
    assert refused.returncode == 2, refused.output
    (line,) = refused.stderr.splitlines()
    assert f"`{out.resolve()}/pt214cu130/{CUDA}` and `{bad.resolve()}/pt214cu130/{CUDA}` are " \
           "different files under one name" in line
    assert "(fix: bump the build number: rebuild that cell with `abistamp build ... -C " \
           "abistamp.build-number=2`" in line
    assert snapshot(out) == before
    # Into a new folder: nothing is made at all.
    refused = cli("index", b, bad, "-o", tmp_path / "new", check=False)
    assert refused.returncode == 2 and "different files under one name" in refused.stderr
    assert not (tmp_path / "new").exists()
    # Another spelling of the name is the same wheel to pip and uv: refused as well.
    variant = copy_wheelhouse(b, tmp_path / "variant")
    (variant / "pt214cu130" / CUDA).unlink()
    shutil.copyfile(restamped, variant / "pt214cu130" / CUDA.replace("tiny_ext-", "Tiny_Ext-"))
    refused = cli("index", b, variant, "-o", tmp_path / "new2", check=False)
    assert refused.returncode == 2 and "different files under one name" in refused.stderr
    assert not (tmp_path / "new2").exists()
    # Identical duplicates are one wheel.
    twin = copy_wheelhouse(a, tmp_path / "twin")
    ok = cli("index", a, twin, "-o", tmp_path / "dup")
    assert f"{twin.resolve()}: 0 wheel(s) added, 1 already there" in ok.stdout
    assert [p.name for p in (tmp_path / "dup").glob("*/*.whl")] == [CPU]


@pytest.mark.slow
@pytest.mark.cuda
def test_a_wheel_in_another_abis_folder_is_refused(cells: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """The folder is the ABI's identity: a wheel in the wrong one, one without an ABI record
    and a truncated one are each refused, naming the file, and nothing is written."""
    a, b = cells
    moved = copy_wheelhouse(b, tmp_path / "moved")
    (moved / "pt213cpu").mkdir()
    (moved / "pt214cu130" / CUDA).rename(moved / "pt213cpu" / CUDA)
    unstamped = copy_wheelhouse(a, tmp_path / "unstamped")
    plain = unstamped / "pt213cpu" / "plain-1.0-py3-none-any.whl"
    metadata = "Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n"
    wheel_file = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(plain, "w") as zf:
        for name, text in (("METADATA", metadata), ("WHEEL", wheel_file), ("RECORD", "")):
            zf.writestr(f"plain-1.0.dist-info/{name}", text)
    truncated = copy_wheelhouse(a, tmp_path / "truncated")
    wheel = truncated / "pt213cpu" / CPU
    wheel.write_bytes(wheel.read_bytes()[:2000])
    wrong_folder = (f"`{moved.resolve()}/pt213cpu/{CUDA}` is in the ABI folder `pt213cpu` "
                    "but its ABI record says `pt214cu130`")
    cases = [
        (moved, wrong_folder, "(fix: move it to the `pt214cu130/` folder of its wheelhouse"),
        (unstamped, f"`{plain.resolve()}` carries no abistamp ABI record",
         "(fix: build it with `abistamp build`"),
        (truncated, f"`{CPU}` is not a readable wheel", "(fix: the file is corrupt or truncated"),
    ]
    for bad, message, fix in cases:
        out = tmp_path / f"out-{bad.name}"
        result = cli("index", a if bad is not truncated else b, bad, "-o", out, check=False)
        assert result.returncode == 2, result.output
        (line,) = result.stderr.splitlines()
        assert message in line and fix in line, line
        assert not out.exists()


def test_inputs_that_are_not_wheelhouses(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for args, message in (
            (["missing"], "the wheelhouse `missing` does not exist"),
            (["plain"], "`plain` is not a wheelhouse: it has no `abistamp-wheelhouse.json`")):
        result = cli("index", *args, "-o", "out", cwd=tmp_path, check=False)
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert message in line and "(fix: pass the folder" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.cuda
def test_adding_a_cell_rewrites_only_what_changed(cells: tuple[Path, Path],
                                                  merged: tuple[Path, Result],
                                                  tmp_path: Path) -> None:
    a, b = cells
    out = tmp_path / "public"
    cli("index", a, "-o", out)
    before = snapshot(out)
    result = cli("index", b, "-o", out)
    after = snapshot(out)
    changed = {rel for rel in before if after[rel] != before[rel]}
    assert changed == {"abistamp-wheelhouse.json", "all.html", "index.html",
                       "simple/tiny-ext/index.html"}, result.stdout
    assert set(after) - set(before) == {f"pt214cu130/{CUDA}", "pt214cu130/index.html",
                                        "pt214cu130/simple/index.html",
                                        "pt214cu130/simple/tiny-ext/index.html"}
    assert "7 file(s) rewritten" in result.stdout
    # Merging what is already there again (OUT named among the inputs too) changes nothing.
    again = cli("index", out, a, b, "-o", out)
    assert snapshot(out) == after
    assert "0 file(s) rewritten" in again.stdout
    # The pages are the ones a one-shot merge of both writes.
    for rel in after:
        if rel.endswith(".html"):
            assert (out / rel).read_bytes() == (merged[0] / rel).read_bytes(), rel


def pip_env() -> dict[str, str]:
    """pip without this machine's configuration (its own find-links and indexes)."""
    env = clean_env(PIP_CONFIG_FILE="/dev/null")
    return {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}


def installed(env: Env) -> tuple[list[float], str, str, str]:
    values, compiled, torch = json.loads(env.py(RUN_OP).stdout)
    version = env.py("import importlib.metadata as m; print(m.version('tiny-ext'))").stdout
    return values, compiled, torch, version.strip()


@pytest.mark.slow
@pytest.mark.cuda
def test_pip_and_uv_install_from_the_merged_index(merged: tuple[Path, Result],
                                                  torch213_wheels: Path, torch214_wheels: Path,
                                                  tmp_path: Path) -> None:
    out = merged[0]
    simple = (out / "simple").as_uri() + "/"
    flat = (out / "all.html").as_uri()
    for torch, wheels, label in (("2.13.0", torch213_wheels, "pt213cpu"),
                                 ("2.14.1", torch214_wheels, "pt214cu130")):
        env = fresh_env(tmp_path / label, wheels, f"torch=={torch}")
        # Naming torch keeps the installers from taking the newest tiny-ext and replacing the
        # environment's torch for it (FACTS: the wheelhouse flow).
        pip = [sys.executable, "-m", "pip", "--python", env.python, "install", "-q",
               "--find-links", wheels, "tiny-ext", f"torch=={torch}"]
        uv = [uv_bin(), "pip", "install", "-p", env.python, "--find-links", wheels, "tiny-ext",
              f"torch=={torch}"]
        for installer in ([*pip, "--index-url", simple], [*pip, "--no-index", "-f", flat],
                          [*uv, "--index-url", simple], [*uv, "--no-index", "-f", flat]):
            run(installer, env=pip_env())
            values, compiled, runtime, version = installed(env)
            assert values == [1.0, 3.0, 5.0], installer
            assert version == f"0.3.0+{label}" and runtime.startswith(torch), installer
            assert runtime.startswith(compiled), (compiled, runtime)
            run([uv_bin(), "pip", "uninstall", "-p", env.python, "tiny-ext"])


@pytest.mark.slow
@pytest.mark.cuda
def test_served_by_a_static_file_server(merged: tuple[Path, Result], tmp_path: Path) -> None:
    """The folder as it is, behind `python -m http.server`: pip finds each wheel through the
    PEP 503 index and through the flat page, and gets the bytes the hash fragment names."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(merged[0]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for where, wheel in ((["--index-url", f"{url}/simple/"], CPU),
                             (["--no-index", "--find-links", f"{url}/all.html"], CUDA)):
            version = wheel.split("-")[1]
            run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp_path, *where,
                 f"tiny-ext=={version}"], env=pip_env())
            label = version.split("+")[1]
            assert sha256(tmp_path / wheel) == sha256(merged[0] / label / wheel)
    finally:
        server.shutdown()


def single_index_project(folder: Path, config: str, torch214_wheels: Path) -> Path:
    folder.mkdir(parents=True)
    # torch 2.14.1's own dependencies (nvidia-*, triton) come from the local folder too, as a
    # last, non-explicit index: nothing is fetched from the registry.
    local = (f'\n[[tool.uv.index]]\nname = "local-torch-deps"\nurl = '
             f'"{torch214_wheels.resolve().as_uri()}"\nformat = "flat"\n')
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = "==3.11.*"\n'
        f"dependencies = []\n\n{config}{local}")
    return folder


@pytest.mark.slow
@pytest.mark.cuda
def test_single_index_extras_resolve_to_their_abi(merged: tuple[Path, Result],
                                                  torch214_wheels: Path, tmp_path: Path) -> None:
    out = merged[0]
    config = cli("uv-config", out, "--single-index", "--extra", "cpu=pt213cpu", "--extra",
                 "cu130=pt214cu130").stdout
    index = (out / "simple").resolve().as_uri() + "/"
    assert f'[[tool.uv.index]]\nname = "abistamp"\nurl = "{index}"\nexplicit = true' in config
    assert 'tiny-ext = { index = "abistamp" }' in config
    assert "abistamp-pt213cpu" not in config, "no index per ABI"
    assert 'cpu = ["torch==2.13.0+cpu", "tiny-ext"]' in config
    assert 'cu130 = ["torch==2.14.1", "tiny-ext"]' in config
    app = single_index_project(tmp_path / "app", config, torch214_wheels)
    run([uv_bin(), "lock"], cwd=app)
    lock = (app / "uv.lock").read_text()
    # Both builds of tiny-ext are locked, from the one index (uv writes its local path).
    registry = re.escape(f"{(out / 'simple').resolve()}/")
    for label in ("pt213cpu", "pt214cu130"):
        assert re.search(rf'name = "tiny-ext"\nversion = "0\.3\.0\+{label}"\nsource = '
                         rf'\{{ registry = "{registry}" \}}', lock), lock
    # The flat page over every ABI locks the same way.
    flat_config = cli("uv-config", out, "--single-index", "--format", "flat", "--extra",
                      "cpu=pt213cpu", "--extra", "cu130=pt214cu130").stdout
    assert f'url = "{(out / "all.html").resolve().as_uri()}"\nformat = "flat"' in flat_config
    flat_app = single_index_project(tmp_path / "flat-app", flat_config, torch214_wheels)
    run([uv_bin(), "lock"], cwd=flat_app)
    flat_lock = (flat_app / "uv.lock").read_text()
    for label in ("pt213cpu", "pt214cu130"):
        assert f'name = "tiny-ext", version = "0.3.0+{label}", source = {{ registry = ' \
               f'"{(out / "all.html").resolve()}" }}' in flat_lock, flat_lock
    env = Env(app / ".venv", "")
    for extra, label, torch in (("cpu", "pt213cpu", "2.13.0+cpu"),
                                ("cu130", "pt214cu130", "2.14.1+cu130"),
                                ("cpu", "pt213cpu", "2.13.0+cpu")):
        sync = run([uv_bin(), "sync", "--extra", extra], cwd=app)
        assert "Built" not in sync.output
        values, compiled, runtime, version = installed(env)
        assert (values, version, runtime) == ([1.0, 3.0, 5.0], f"0.3.0+{label}", torch)
        assert runtime.startswith(compiled)
        (record,) = env.root.glob("lib/python3*/site-packages/tiny_ext-*.dist-info/"
                                  "abistamp.json")
        assert json.loads(record.read_text())["label"] == label
        check = cli("check", "--python", env.python)
        assert re.search(rf"tiny-ext\s+0\.3\.0\+{label}\s.*\sok$", check.stdout, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.cuda
def test_single_index_refuses_pins_that_cannot_tell_the_abis_apart(
        cells: tuple[Path, Path], torch213_wheels: Path, tmp_path: Path) -> None:
    a, b = cells
    # The torch 2.13 wheel re-stamped without a torch pin: torch 2.14.1 satisfies it too, so
    # in one index the resolver could give extra cu130 the CPU build.
    unpinned = copy_wheelhouse(a, tmp_path / "a")
    cli("stamp", a / "pt213cpu" / CPU, "--abi-from", a / "pt213cpu" / CPU,
        "-C", "abistamp.pin=none", "-C", "abistamp.build-number=2", "-o", tmp_path / "s")
    (wheel,) = (tmp_path / "s").glob("*.whl")
    assert "Requires-Dist: torch" not in read_dist_file(wheel, "METADATA")
    (unpinned / "pt213cpu" / CPU).unlink()
    shutil.copyfile(wheel, unpinned / "pt213cpu" / wheel.name)
    out = tmp_path / "out"
    cli("index", unpinned, b, "-o", out)
    result = cli("uv-config", out, "--single-index", "--extra", "cpu=pt213cpu", "--extra",
                 "cu130=pt214cu130", check=False)
    assert result.returncode == 2, result.output
    (line,) = result.stderr.splitlines()
    assert (f"in one index extra `cu130` (torch 2.14.1) could get `pt213cpu/{wheel.name}`: "
            "it has no torch pin, which torch 2.14.1 satisfies too") in line
    # No pin at all: the fix is a pin (an exact one), not "exact pins" as though it had some.
    assert "(fix: stamp the wheels with a torch pin (`-C abistamp.pin=exact`)" in line
    # Routed per extra, the same wheelhouse is fine, once it is said where the re-stamped
    # wheel's torch comes from: no build recorded in the manifest made it.
    line = cli("uv-config", out, "--extra", "cpu=pt213cpu", "--extra", "cu130=pt214cu130",
               check=False).stderr
    assert (f"(no build in `{out / 'abistamp-wheelhouse.json'}` made the wheels of `pt213cpu`: "
            "they were put there by hand, or stamped again)") in line, line
    assert "(fix: pass `--torch-index cpu=https://download.pytorch.org/whl/cpu`" in line
    routed = cli("uv-config", out, "--extra", "cpu=pt213cpu", "--extra", "cu130=pt214cu130",
                 "--torch-index", f"cpu={torch213_wheels}").stdout
    assert ('tiny-ext = [\n    { index = "abistamp-pt213cpu", extra = "cpu" },\n'
            '    { index = "abistamp-pt214cu130", extra = "cu130" },\n]') in routed, routed
    assert 'conflicts = [[{ extra = "cpu" }, { extra = "cu130" }]]' in routed
    assert 'cpu = ["torch==2.13.0+cpu", "tiny-ext"]' in routed

