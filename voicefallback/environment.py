"""Where things are, from the environment: the user's directories, the registry's and the
state's locations (files or database URLs), and API keys from their variables."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from voicefallback.errors import ConfigError, InputError

APP_NAME = "voicefallback"
CONFIG_ENV = "VOICEFALLBACK_CONFIG"
DB_ENV = "VOICEFALLBACK_DB"


def home_dir() -> Path:
    """$HOME, or the account's home directory when HOME is unset, empty or relative
    (`HOME=""` must not put the state in `/.local/state`)."""
    home = os.environ.get("HOME", "")
    if os.name == "nt" or os.path.isabs(home):
        return Path.home()
    try:
        import pwd

        account = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        account = ""
    if not os.path.isabs(account):
        raise ConfigError(
            "HOME is not set to an absolute path and the account has no home directory;"
            f" set HOME, or give --config and --db (config= and db= from Python), or set"
            f" {CONFIG_ENV} and {DB_ENV}"
        )
    return Path(account)


def _xdg(variable: str, default: Path) -> Path:
    """An XDG base directory; relative values are ignored, as the XDG spec says."""
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else default


def user_config_dir() -> Path:
    if sys.platform == "darwin":
        return home_dir() / "Library" / "Application Support" / APP_NAME
    if os.name == "nt":
        return Path(os.environ.get("APPDATA") or Path.home()) / APP_NAME
    return _xdg("XDG_CONFIG_HOME", home_dir() / ".config") / APP_NAME


def user_state_dir() -> Path:
    if sys.platform == "darwin" or os.name == "nt":
        return user_config_dir()
    return _xdg("XDG_STATE_HOME", home_dir() / ".local" / "state") / APP_NAME


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed models.toml from the one read before (mtime, size, inode; None
    when it cannot be read): `serve` and `probe --every` reload when it differs."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


def config_path(option: Path | None) -> Path:
    """--config beats VOICEFALLBACK_CONFIG beats ./models.toml beats the user config dir."""
    if option is not None:
        return option
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path("models.toml")
    if local.is_file():
        return local
    return user_config_dir() / "models.toml"


DATABASE_SCHEMES = ("postgresql://", "postgres://")
# What looks meant as a URL rather than a file path: a scheme (two letters or more, so not a
# drive letter) then ":/". A file path never starts so on purpose: `./mysql:/x` still can.
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


def is_database_url(location: Path | str) -> bool:
    """A postgresql:// (or postgres://) URL, scheme in any case, as opposed to a path to a
    SQLite file."""
    return isinstance(location, str) and location[:13].lower().startswith(DATABASE_SCHEMES)


def display_location(location: Path | str) -> str:
    """The state's location as output and messages show it: a URL without its password."""
    if not is_database_url(location):
        return str(location)
    try:
        parts = urlsplit(str(location))
    except ValueError:
        return "postgresql://(unparseable URL)"
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    query = "&".join(
        item for item in parts.query.split("&") if item and not item.startswith("password=")
    )
    host = f"{userinfo}@{netloc[2]}" if userinfo else netloc[2]
    # Written out: urlunsplit drops the "//" of a URL without a host (postgresql:///db).
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{query}" if query else "")


def db_path(option: Path | str | None) -> Path | str:
    """--db beats VOICEFALLBACK_DB beats the user state dir; a URL is returned as given, its
    scheme in lower case (libpq knows no other).

    A value that looks like a URL of another kind (`mysql://…`, `postgresq://…`,
    `postgresql:/…`) is refused: taken as a file path, it would quietly create a SQLite file
    under a directory named after the scheme, and that host would leave its fleet.
    """
    where = "--db" if option is not None else DB_ENV
    value = option if option is not None else os.environ.get(DB_ENV) or None
    if value is None:
        return user_state_dir() / "state.db"
    if isinstance(value, Path):
        return value
    if is_database_url(value):
        scheme, _, rest = value.partition("://")
        return f"{scheme.lower()}://{rest}"
    if _URL_LIKE.match(value):
        shown = re.sub(r"(//[^/@:]*):[^/@]*@", r"\1@", value)  # a password stays out
        raise InputError(
            f"{where} {shown}: not a state location: a PostgreSQL URL starts with"
            " postgresql:// (or postgres://); a SQLite file is a path"
        )
    return Path(value)


def api_key(env_name: str | None) -> str | None:
    """The one place a key is read: the named variable's value without surrounding whitespace
    (a newline or carriage return from a pasted key or a CRLF env file); None when unset or blank.
    """
    if not env_name:
        return None
    return os.environ.get(env_name, "").strip() or None


def secrets_from_env(names: Iterable[str | None]) -> list[str]:
    """The configured keys: each named variable's value as sent (stripped, see api_key)
    and as set (with the whitespace around it), for variables that hold a key."""
    found: dict[str, None] = {}  # ordered, without repeats
    for name in names:
        key = api_key(name)
        if name and key is not None:
            found[os.environ[name]] = None
            found[key] = None
    return list(found)
