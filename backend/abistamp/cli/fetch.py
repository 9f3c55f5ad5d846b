"""Fetch a release's sdist (`abistamp build NAME==VERSION`) without running any of its code.

`pip download --no-binary :all:` prepares an sdist's metadata after downloading it: it installs
the build requirements and runs setup.py in an isolated environment, which fails for every
setup.py that imports torch and runs the project's code just to fetch it. Here the file is found
the way installers find it, through the simple repository API (PEP 503 HTML, PEP 691 JSON) and
find-links folders, by unearth (pip's finder as a library), and downloaded: nothing else runs.

Where to look, and how to reach it (pip's and uv's configuration, proxies, certificates,
credentials), is fetchconfig.py's.

Fetched files are kept in a cache (keyed by URL and index hash) that survives between runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from abistamp.core.atomic import replacing
from abistamp.core.errors import AbistampError

from .fetchconfig import FetchConfig, Place, redact

if TYPE_CHECKING:
    from unearth import Package
    from unearth.fetchers import Fetcher, PyPIClient

#: Archives an sdist comes as (the unpacking uses tarfile and zipfile, which read all of these).
SDIST_ARCHIVES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")

Say = Callable[[str], None]


# --- finding ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Looked:
    """What one place gave for the project."""

    place: Place
    packages: list[Package] = dataclasses.field(default_factory=list)
    problem: str | None = None  # an error reaching or reading it


@dataclasses.dataclass(frozen=True)
class Fetched:
    path: Path
    url: str  # without credentials
    sha256: str
    checked: str  # how the bytes were checked, in words
    yanked: str | None  # the yank reason ("" when none given), None when not yanked
    cached: bool


class _Collect(logging.Handler):
    """unearth reports unreachable or skipped pages as log warnings; keep them per place."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _collecting() -> Iterator[_Collect]:
    handler = _Collect()
    logger = logging.getLogger("unearth")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def make_session(config: FetchConfig) -> PyPIClient:
    from unearth.auth import MultiDomainBasicAuth
    from unearth.fetchers import PyPIClient

    verify: ssl.SSLContext | bool = True
    if config.cert or config.client_cert:
        try:
            if config.cert and os.path.isdir(config.cert):
                ctx = ssl.create_default_context(capath=config.cert)
            else:
                ctx = ssl.create_default_context(cafile=config.cert)
            if config.client_cert:
                ctx.load_cert_chain(config.client_cert)
        except (OSError, ssl.SSLError) as e:
            raise AbistampError(f"the certificate settings cannot be loaded (`{config.cert}`, "
                                f"client `{config.client_cert}`): {e}",
                                "fix pip's `cert`/`client-cert` or `REQUESTS_CA_BUNDLE`") from None
        verify = ctx
    extra: dict[str, Any] = {"proxy": config.proxy} if config.proxy else {}
    session = PyPIClient(trusted_hosts=config.trusted_hosts, verify=verify,
                         timeout=config.timeout, follow_redirects=True, **extra)
    # Credentials in index URLs and in .netrc; never a prompt (a build has no terminal).
    session.auth = MultiDomainBasicAuth(prompting=False,
                                        index_urls=[p.url for p in config.places])
    return session


def _fetcher(session: PyPIClient) -> Fetcher:
    # unearth's client is its own Fetcher; its annotations disagree with the protocol's.
    return cast("Fetcher", session)


def look(session: PyPIClient, place: Place, name: str) -> Looked:
    """Every file of the project at one place, wheels and yanked files included."""
    from unearth import PackageFinder

    finder = PackageFinder(session=_fetcher(session), ignore_compatibility=True,
                           index_urls=[place.url] if place.kind == "index" else [],
                           find_links=[place.url] if place.kind == "find-links" else [])
    looked = Looked(place)
    with _collecting() as collected:
        try:
            looked.packages = list(finder.find_all_packages(name, allow_yanked=True))
        except Exception as e:  # noqa: BLE001 - a network or file error: report, go on
            looked.problem = f"{type(e).__name__}: {e}".strip().rstrip(":")
    if collected.messages and not looked.problem and not looked.packages:
        looked.problem = "; ".join(collected.messages)
    return looked


def page_url(place: Place, name: str) -> str:
    if place.kind == "index":
        return place.shown.rstrip("/") + f"/{canonicalize_name(name)}/"
    return place.shown


def _versions(packages: list[Package]) -> str:
    from packaging.version import Version

    found = sorted({Version(p.version) for p in packages if p.version})
    if not found:
        return "no files of it"
    shown = ", ".join(str(v) for v in found[-6:])
    return f"versions {'..., ' if len(found) > 6 else ''}{shown}"


def find_sdist(requirement: str, config: FetchConfig, session: PyPIClient, say: Say
               ) -> tuple[Place, Package]:
    req = Requirement(requirement)
    name = req.name
    say(f"looking for the sdist of {requirement} (exact version, normalised name "
        f"`{canonicalize_name(name)}`); running none of its code")
    for note in config.notes:
        say(f"  {note}")
    if not config.places:
        raise AbistampError(f"no index or find-links location to fetch `{requirement}` from",
                            "unset `no-index`, or pass `--index-url` / `--find-links`")
    results: list[Looked] = []
    for place in config.places:
        looked = look(session, place, name)
        results.append(looked)
        where = f"{page_url(place, name)} [{place.kind}; {place.origin}]"
        if looked.problem:
            say(f"  {where}: {looked.problem}")
        else:
            say(f"  {where}: {_versions(looked.packages)}")
    matching = [(r.place, p) for r in results for p in r.packages
                if p.version and req.specifier.contains(p.version, prereleases=True)]
    sdists = [(pl, p) for pl, p in matching if not p.link.is_wheel
              and p.link.filename.lower().endswith(SDIST_ARCHIVES)]
    searched = "; ".join(f"{page_url(r.place, name)} "
                         f"({r.problem or _versions(r.packages)})" for r in results)
    if not sdists:
        if matching:
            wheels = sorted({p.link.filename for _, p in matching})
            raise AbistampError(
                f"`{requirement}` is published only as wheels ({', '.join(wheels[:4])}"
                f"{', ...' if len(wheels) > 4 else ''}): no sdist to build from; searched "
                f"{searched}",
                "build from the project's source tree (a checkout) instead, or install one of "
                "the wheels and stamp it with `abistamp stamp`")
        unreachable = [r for r in results if r.problem]
        raise AbistampError(
            f"no sdist of `{requirement}` found; searched {searched}",
            "check the name and version" + (", and the places that could not be read"
                                            if unreachable else "")
            + "; indexes come from `--index-url`/`--extra-index-url`/`--find-links`, pip's "
            "configuration (`pip config list`) and UV_DEFAULT_INDEX, UV_INDEX, "
            "UV_EXTRA_INDEX_URL, UV_FIND_LINKS")
    # Yanked files only when nothing else matches (PEP 592: allowed for an exact pin).
    sdists.sort(key=lambda item: (item[1].link.is_yanked,
                                  not item[1].link.filename.endswith(".tar.gz")))
    place, package = sdists[0]
    for _, other in sdists[1:]:
        say(f"  also found, not used: {redact(other.link.url_without_fragment)}")
    return place, package


# --- downloading and the cache ------------------------------------------------------------------


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "abistamp" / "sdists"


def _index_hash(package: Package) -> tuple[str, str] | None:
    """The strongest hash the index gave for the file: (name, hex digest)."""
    option = package.link.hash_option or {}
    for hash_name in ("sha512", "sha384", "sha256", "sha224", "sha1", "md5"):
        if option.get(hash_name):
            return hash_name, option[hash_name][0]
    return None


def _file_hash(path: Path, hash_name: str) -> str:
    h = hashlib.new(hash_name)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(requirement: str, config: FetchConfig, cache_dir: Path, say: Say) -> Fetched:
    """Find the release's sdist, download it (or take it from the cache) and check it."""
    from unearth.errors import HashMismatchError, UnpackError
    from unearth.preparer import download_link

    with contextlib.closing(make_session(config)) as session:
        place, package = find_sdist(requirement, config, session, say)
        link = package.link
        url = redact(link.url_without_fragment)
        # PEP 691 allows `"yanked": true` (no reason), PEP 503 an empty data-yanked.
        raw_yank: object = link.yank_reason
        yanked = None if raw_yank is None else raw_yank if isinstance(raw_yank, str) else ""
        if yanked is not None:
            say(f"WARNING: `{link.filename}` is yanked ({yanked or 'no reason given'}); used "
                f"because `{requirement}` pins it exactly (PEP 592)")
        index_hash = _index_hash(package)
        if link.is_file:
            # A find-links folder (or file:// index) on this machine: used where it lies.
            path = link.file_path
            checked = _check_local(path, index_hash, url)
            sha256 = _file_hash(path, "sha256")
            say(f"using {path} (sha256 {sha256}; {checked})")
            return Fetched(path, url, sha256, checked, yanked, cached=False)
        key_text = url + "\n" + (":".join(index_hash) if index_hash else "no hash")
        entry = cache_dir / hashlib.sha256(key_text.encode()).hexdigest()[:32]
        target = entry / link.filename
        checked = (f"{index_hash[0]} from the index verified" if index_hash else
                   f"no hash from {place.shown}: sha256 computed here, not verified")
        if target.is_file():
            if index_hash is None or _file_hash(target, index_hash[0]) == index_hash[1]:
                sha256 = _file_hash(target, "sha256")
                say(f"from the cache: {target} ({url}, sha256 {sha256}; {checked})")
                return Fetched(target, url, sha256, checked, yanked, cached=True)
            say(f"the cached {target} no longer matches the index's hash: fetching it again")
        entry.mkdir(parents=True, exist_ok=True)
        say(f"downloading {url}")
        with tempfile.TemporaryDirectory(prefix=".download-", dir=entry) as tmp:
            hashes = {index_hash[0]: [index_hash[1]]} if index_hash else None
            try:
                got = download_link(_fetcher(session), link, Path(tmp), hashes)
            except HashMismatchError as e:
                actual = next(iter(e.actual.values()), "?")
                raise AbistampError(
                    f"the download of {url} does not match the index's "
                    f"{index_hash and index_hash[0]} (index {index_hash and index_hash[1]}, got "
                    f"{actual}): nothing was kept",
                    "the index or a proxy serves other bytes than it lists; report it to the "
                    "index's owner, or pass a trusted `--index-url`") from None
            except (UnpackError, OSError) as e:
                raise AbistampError(f"could not download {url}: {e}",
                                    "check the network, proxy and certificate settings, and the "
                                    "credentials for that host (URL or .netrc)") from None
            except Exception as e:  # noqa: BLE001 - the HTTP client's own errors
                raise AbistampError(f"could not download {url}: {type(e).__name__}: {e}",
                                    "check the network, proxy and certificate settings, and the "
                                    "credentials for that host (URL or .netrc)") from None
            sha256 = _file_hash(got, "sha256")
            with replacing(target) as part:
                os.replace(got, part)
        say(f"kept in the cache: {target} (sha256 {sha256}; {checked})")
        return Fetched(target, url, sha256, checked, yanked, cached=False)


def _check_local(path: Path, index_hash: tuple[str, str] | None, url: str) -> str:
    if index_hash is None:
        return "a find-links folder gives no hash: sha256 computed here, not verified"
    got = _file_hash(path, index_hash[0])
    if got != index_hash[1]:
        raise AbistampError(
            f"`{path}` does not match the {index_hash[0]} its index lists for {url} "
            f"(index {index_hash[1]}, file {got})",
            "the index is out of date with its files: regenerate it, or remove the file")
    return f"{index_hash[0]} from the index verified"

