"""Where `abistamp build NAME==VERSION` looks for a release's sdist, and how it reaches it.

Where to look combines as pip combines it: the primary index is the command's `--index-url`,
else pip's `index-url` (its configuration files and `PIP_INDEX_URL`, read here directly: there
is no pip under `uv tool install`), else `UV_DEFAULT_INDEX` / `UV_INDEX_URL`, else PyPI; every
extra index and find-links entry (the command's, pip's, uv's) is added. Proxies, certificates,
`.netrc` and credentials in URLs apply, so private indexes work. Nothing else of the
environment is read. Finding and downloading the file is fetch.py's.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from abistamp.core.errors import AbistampError

#: pip's and uv's default index.
DEFAULT_INDEX = "https://pypi.org/simple/"
# pip's sections that apply to `pip install` / `pip download`, lowest precedence first.
PIP_SECTIONS = ("global", "install", "download")


@dataclasses.dataclass(frozen=True)
class Place:
    """One index or find-links location, and where it was configured."""

    url: str  # as configured; may hold credentials, never shown
    kind: str  # "index" or "find-links"
    origin: str

    @property
    def shown(self) -> str:
        return redact(self.url)


@dataclasses.dataclass
class FetchConfig:
    places: list[Place]
    trusted_hosts: list[str] = dataclasses.field(default_factory=list)
    cert: str | None = None  # a CA bundle (file) or folder
    client_cert: str | None = None
    proxy: str | None = None
    timeout: float = 15.0
    notes: list[str] = dataclasses.field(default_factory=list)  # what was read, for the log


def redact(url: str) -> str:
    """A URL without the password (and without the user for tokens) in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in the order pip loads them (later ones win).

    Site-wide (XDG_CONFIG_DIRS, /etc), user (~/.pip, XDG_CONFIG_HOME) unless PIP_CONFIG_FILE
    names an existing file, the running environment's, then PIP_CONFIG_FILE; none at all when
    PIP_CONFIG_FILE is os.devnull, as with pip.
    """
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = Path(environ.get("HOME") or Path.home())
    files: list[Path] = []
    if sys.platform == "darwin":
        files.append(Path("/Library/Application Support/pip/pip.conf"))
    else:
        xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
        files += [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (env_file and Path(env_file).exists()):
        files.append(home / ".pip" / "pip.conf")
        if sys.platform == "darwin":
            files.append(home / "Library" / "Application Support" / "pip" / "pip.conf")
        config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        files.append(Path(config_home) / "pip" / "pip.conf")
    files.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def read_pip_config(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """pip's settings that a download uses: name -> (value, where it was set).

    Sections apply lowest first (`[global]`, `[install]`, `[download]`), each across every
    file in load order; `PIP_*` environment variables win over all files.
    """
    parsers: list[tuple[Path, configparser.RawConfigParser]] = []
    for path in pip_config_files(environ):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as e:
            raise AbistampError(f"pip's configuration file `{path}` cannot be read: {e}",
                                "fix the file (`pip config debug` lists the files pip reads)"
                                ) from None
        parsers.append((path, parser))
    values: dict[str, tuple[str, str]] = {}
    for section in PIP_SECTIONS:
        for path, parser in parsers:
            if parser.has_section(section):
                for key, value in parser.items(section):
                    values[key.lower().replace("_", "-")] = (value, f"`{path}` [{section}]")
    for name, value in environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            values[name[4:].lower().replace("_", "-")] = (value, f"`{name}`")
    return values


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def fetch_config(index_url: str | None, extra_index_urls: list[str], find_links: list[str],
                 environ: Mapping[str, str] | None = None) -> FetchConfig:
    """Where to look for a release, and how to reach it, from the command, pip and uv."""
    env = os.environ if environ is None else environ
    pip = read_pip_config(env)
    places, notes = _places(index_url, extra_index_urls, find_links, pip, env)
    config = FetchConfig(places, notes=notes)
    _connection(config, pip, env)
    return config


def _places(index_url: str | None, extra_index_urls: list[str], find_links: list[str],
            pip: dict[str, tuple[str, str]], env: Mapping[str, str]
            ) -> tuple[list[Place], list[str]]:
    """The indexes and find-links locations, the primary index first, each once; and a note
    when no index is searched."""
    places: list[Place] = []
    notes: list[str] = []

    def add(url: str, kind: str, origin: str) -> None:
        url = url.strip()
        if url and not any(p.url == url and p.kind == kind for p in places):
            places.append(Place(url, kind, origin))

    def add_pip(key: str, kind: str) -> None:
        if key in pip:
            value, where = pip[key]
            for url in value.split():
                add(url, kind, f"pip's `{key}` ({where})")

    no_index = _truthy(pip["no-index"][0]) if "no-index" in pip else False
    no_index = no_index or _truthy(env.get("UV_NO_INDEX", ""))
    if not no_index:
        if index_url:
            add(index_url, "index", "`--index-url`")
        elif "index-url" in pip:
            add(pip["index-url"][0], "index", f"pip's `index-url` ({pip['index-url'][1]})")
        elif env.get("UV_DEFAULT_INDEX"):
            add(env["UV_DEFAULT_INDEX"], "index", "`UV_DEFAULT_INDEX`")
        elif env.get("UV_INDEX_URL"):
            add(env["UV_INDEX_URL"], "index", "`UV_INDEX_URL`")
        else:
            add(DEFAULT_INDEX, "index", "the default index, as for pip and uv")
        for url in extra_index_urls:
            add(url, "index", "`--extra-index-url`")
        add_pip("extra-index-url", "index")
        for url in env.get("UV_EXTRA_INDEX_URL", "").split():
            add(url, "index", "`UV_EXTRA_INDEX_URL`")
        for entry in env.get("UV_INDEX", "").split():
            # `name=url` or a bare URL; a name never holds `:` or `/`.
            name, sep, rest = entry.partition("=")
            url = rest if sep and "/" not in name and ":" not in name else entry
            add(url, "index", "`UV_INDEX`")
    else:
        notes.append("no index is searched: `no-index` is set (pip's configuration or "
                     "`UV_NO_INDEX`)")
    for link in find_links:
        add(link, "find-links", "`--find-links`")
    add_pip("find-links", "find-links")
    for link in env.get("UV_FIND_LINKS", "").split(","):
        add(link, "find-links", "`UV_FIND_LINKS`")
    return places, notes


def _connection(config: FetchConfig, pip: dict[str, tuple[str, str]], env: Mapping[str, str]
                ) -> None:
    """Trusted hosts, certificates, proxy and timeout, from pip's settings and the variables
    requests honours; what was used is noted for the log."""
    notes = config.notes
    for value in (pip.get("trusted-host", ("", ""))[0], env.get("UV_INSECURE_HOST", "")):
        config.trusted_hosts += value.split()
    if "cert" in pip:
        config.cert = pip["cert"][0]
        notes.append(f"certificates from {pip['cert'][1]}: `{config.cert}`")
    else:
        # requests (and so pip) honour these; SSL_CERT_FILE/SSL_CERT_DIR are read by the client.
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            if env.get(name):
                config.cert = env[name]
                notes.append(f"certificates from `{name}`: `{config.cert}`")
                break
    if "client-cert" in pip:
        config.client_cert = pip["client-cert"][0]
    if "proxy" in pip:
        config.proxy = pip["proxy"][0]
        notes.append(f"proxy from {pip['proxy'][1]}")
    for key in ("timeout", "default-timeout"):
        if key in pip:
            try:
                config.timeout = float(pip[key][0])
            except ValueError:
                raise AbistampError(f"pip's `{key}` ({pip[key][1]}) is `{pip[key][0]}`, not a "
                                    "number of seconds", "set it to a number such as 60"
                                    ) from None
