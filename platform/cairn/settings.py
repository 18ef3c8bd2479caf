"""Where Cairn keeps things, from the environment: the embedded default or a cluster's services.

| variable | default (embedded) |
| `CAIRN_HOME` | `./.cairn` |
| `CAIRN_DATABASE_URL` | `sqlite:///$CAIRN_HOME/cairn.db` (PostgreSQL in production) |
| `CAIRN_DATABASE_PASSWORD_FILE` | none: a file holding the database's password (a mounted secret) |
| `MLFLOW_TRACKING_URI` | `sqlite:///$CAIRN_HOME/mlflow.db`, artifacts under `$CAIRN_HOME/mlartifacts` |
| `CAIRN_STORE` | `$CAIRN_HOME/store` (any fsspec URI, e.g. `s3://bucket/cairn`) |
| `CAIRN_CHECKPOINTS` | `$CAIRN_HOME/checkpoints` (on a cluster: a path every node mounts) |

Secrets on a cluster. `cairn submit` hands the job these variables through the Ray job's
`runtime_env`, which anyone who can reach the Jobs API or the dashboard can read (and which
every task of the job inherits). So they go without their secrets (`Settings.env`): a URL loses
its password (`postgresql://cairn:pw@db/cairn` goes as `postgresql://cairn@db/cairn`; an
`http(s)://` URL loses its whole `user:password@`) and query parameters named like a secret
(`password=`, `token=`, `..._key=`). The job finds them where Ray recommends secrets live: on the
nodes, supplied by whoever runs the cluster (a Kubernetes Secret, the launcher's environment):

- Cairn's database: the password from the URL itself, else from the file that
  `CAIRN_DATABASE_PASSWORD_FILE` names (a secret mounted as a file; read when Cairn
  connects, by `cairn.db`), else PostgreSQL's own `PGPASSWORD`, `PGPASSFILE` or `~/.pgpass` (libpq reads
  them itself);
- MLflow over HTTP: `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`,
  `MLFLOW_TRACKING_TOKEN`, or `~/.mlflow/credentials` (MLflow reads them itself); MLflow on a
  database: that database's own way (libpq's, for PostgreSQL);
- the artifact store: its filesystem's own way (for `s3://`, `AWS_*` variables or `~/.aws`).

`cairn submit` says which credentials it withheld and where the cluster must supply them
(`Settings.withheld`), on stderr and in the run's events. Other secrets (`MLFLOW_TRACKING_PASSWORD`,
`AWS_SECRET_ACCESS_KEY`, ...) are never forwarded at all. Wherever Cairn shows a URL (errors,
logs) it shows it with the password masked (`redact`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from cairn.errors import CairnError

PASSWORD_FILE_VAR = "CAIRN_DATABASE_PASSWORD_FILE"
SECRET_FILE_MAX_BYTES = 64 * 1024
# Query parameters that carry a secret: libpq's `password`, `token`, `secret`, `api_key`, ...
# (not `sslkey`, which names a file).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|credential|(^|_)key$", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Where one deployment keeps its state: its home, database, MLflow, artifact store and
    checkpoints. `Settings.from_env()` reads them from `CAIRN_HOME`, `CAIRN_DATABASE_URL`,
    `MLFLOW_TRACKING_URI`, `CAIRN_STORE` and `CAIRN_CHECKPOINTS` (defaults: `cairn.settings`)."""

    home: Path
    database_url: str
    mlflow_uri: str
    mlflow_artifacts: str
    store: str
    checkpoints: Path

    @classmethod
    def embedded(cls, home: str | Path) -> Settings:
        """The embedded default under `home` (SQLite, a local MLflow store, a local artifact
        store), whatever CAIRN_* the environment holds: a deployment of its own."""
        h = Path(home).expanduser().resolve()
        return cls(
            home=h,
            database_url=f"sqlite:///{h / 'cairn.db'}",
            mlflow_uri=f"sqlite:///{h / 'mlflow.db'}",
            mlflow_artifacts=str(h / "mlartifacts"),
            store=str(h / "store"),
            checkpoints=h / "checkpoints",
        )

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        h = Path(home or os.environ.get("CAIRN_HOME") or ".cairn").expanduser().resolve()
        return cls(
            home=h,
            database_url=os.environ.get("CAIRN_DATABASE_URL") or f"sqlite:///{h / 'cairn.db'}",
            mlflow_uri=os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{h / 'mlflow.db'}",
            mlflow_artifacts=str(h / "mlartifacts"),
            store=os.environ.get("CAIRN_STORE") or str(h / "store"),
            checkpoints=Path(os.environ.get("CAIRN_CHECKPOINTS") or h / "checkpoints"),
        )

    def __repr__(self) -> str:
        # A Settings may hold passwords (in its URLs); its repr lands in logs and tracebacks.
        return (
            f"Settings(home={str(self.home)!r}, database_url={redact(self.database_url)!r}, "
            f"mlflow_uri={redact(self.mlflow_uri)!r}, store={redact(self.store)!r}, "
            f"checkpoints={str(self.checkpoints)!r})"
        )

    def env(self) -> dict[str, str]:
        """The variables that make another process (a Ray job driver) see the same state, with
        no secret in them: URLs lose their credentials (the module docstring says where the
        other process finds them instead; `withheld` says what was left out)."""
        return {
            "CAIRN_HOME": str(self.home),
            "CAIRN_DATABASE_URL": strip_credentials(self.database_url),
            "MLFLOW_TRACKING_URI": strip_credentials(self.mlflow_uri),
            "CAIRN_STORE": strip_credentials(self.store),
            "CAIRN_CHECKPOINTS": str(self.checkpoints),
        }

    def local_env(self) -> dict[str, str]:
        """`env` with credentials, for a child process on this machine (a driver `cairn server`
        starts, the MLflow handoff): unlike a Ray job's runtime_env, a process environment is
        readable by no API."""
        return {
            "CAIRN_HOME": str(self.home),
            "CAIRN_DATABASE_URL": self.database_url,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "CAIRN_STORE": self.store,
            "CAIRN_CHECKPOINTS": str(self.checkpoints),
        }

    def withheld(self) -> list[str]:
        """One line per variable whose credentials `env` left out: what the other process gets
        and where it must find the credentials instead. Empty when nothing was withheld."""
        notes = []
        for var, url in (
            ("CAIRN_DATABASE_URL", self.database_url),
            ("MLFLOW_TRACKING_URI", self.mlflow_uri),
            ("CAIRN_STORE", self.store),
        ):
            stripped = strip_credentials(url)
            if stripped != url:
                notes.append(
                    f"{var} goes to the job without its credentials, as {stripped}; "
                    f"the cluster's nodes must supply them: {_where_to_supply(var, stripped)}"
                )
        return notes

    def logs_dir(self, run_id: str) -> Path:
        return self.home / "logs" / run_id

    def checkpoint_dir(self, step: str, fingerprint: str) -> Path:
        # Keyed by fingerprint: a retried or resumed step finds its own checkpoints, nothing else.
        return self.checkpoints / f"{step}-{fingerprint[:16]}"


def _where_to_supply(var: str, url: str) -> str:
    scheme = url.partition("://")[0].split("+")[0].lower()
    postgres = "PGPASSWORD, PGPASSFILE or ~/.pgpass (PostgreSQL's own)"
    if var == "CAIRN_DATABASE_URL":
        own = postgres if scheme.startswith("postgres") else "the database driver's own way"
        return f"{PASSWORD_FILE_VAR} (a mounted secret file), or {own}"
    if var == "MLFLOW_TRACKING_URI":
        if scheme in ("http", "https"):
            return (
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN, "
                "or ~/.mlflow/credentials"
            )
        return postgres if scheme.startswith("postgres") else "the database driver's own way"
    return "the way its filesystem reads them (for s3://: AWS_* variables or ~/.aws)"


# --- credentials in URLs ------------------------------------------------------------------------
# URLs are taken apart and put back as text, the way their readers parse them: SQLAlchemy (the
# database, MLflow on a database) reads a password up to the next "@" (it may hold "/", "?" or
# "#"); HTTP clients (MLflow over HTTP) read user info only up to the first "/", "?" or "#".
# Nothing is re-encoded: the rest of a URL comes back character for character.

_SCHEME = re.compile(r"([A-Za-z][\w+.-]*)://")
_SQL_USERINFO = re.compile(r"(?P<user>[^:/@]*)(?::(?P<password>[^@]*))?@")


@dataclass(frozen=True)
class _URL:
    head: str  # "scheme://"
    user: str | None  # None: no user info at all
    password: str | None  # None: no ":" in the user info
    where: str  # host, port, path: what follows the user info, up to the query
    query: list[str]  # the "k=v" pairs
    tail: str  # "#fragment" (HTTP), else ""
    http: bool

    def text(self, user: str | None, password: str | None, query: list[str]) -> str:
        info = "" if user is None else user + ("" if password is None else f":{password}") + "@"
        return self.head + info + self.where + ("?" + "&".join(query) if query else "") + self.tail


def _parse(url: str) -> _URL | None:
    """`url` in parts, or None when it is not a `scheme://...` URL (a path, say)."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    http = scheme.group(1).split("+")[0].lower() in ("http", "https")
    after = url[scheme.end() :]
    user = password = None
    if http:
        netloc = re.split(r"[/?#]", after, maxsplit=1)[0]
        info, at, _ = netloc.rpartition("@")
        if at:
            user, colon, password = info.partition(":")
            password = password if colon else None
            after = after[len(info) + 1 :]
    elif found := _SQL_USERINFO.match(after):
        user, password = found["user"], found["password"]
        after = after[found.end() :]
    tail = ""
    if http:  # a fragment only means one to an HTTP client; SQLAlchemy reads "#" as text
        after, hash_, fragment = after.partition("#")
        tail = hash_ + fragment
    where, q, query = after.partition("?")
    return _URL(scheme.group(0), user, password, where, query.split("&") if q else [], tail, http)


def _secret_param(pair: str) -> bool:
    return bool(_SECRET_PARAM.search(unquote(pair.partition("=")[0])))


def strip_credentials(url: str) -> str:
    """`url` without the secrets in it: the password of `user:password@` (for http(s) the whole
    user info, which may be a token), and query parameters named like a secret. A URL with none
    comes back unchanged, character for character."""
    u = _parse(url)
    if u is None:
        return url
    query = [p for p in u.query if not _secret_param(p)]
    if u.password is None and query == u.query and not (u.http and u.user is not None):
        return url
    return u.text(None if u.http or not u.user else u.user, None, query)


def redact(url: str) -> str:
    """`url` as it may be shown (in errors, logs): its secrets replaced by `***`."""
    u = _parse(url)
    if u is None:
        return url
    query = [f"{p.partition('=')[0]}=***" if _secret_param(p) else p for p in u.query]
    if u.http and u.user is not None:
        return u.text("***", None, query)
    return u.text(u.user, None if u.password is None else "***", query)


def url_secrets(url: str) -> list[str]:
    """The secret strings in `url` (as written and percent-decoded), longest first, for
    `scrub`."""
    u = _parse(url)
    if u is None:
        return []
    found = [u.password or "", *(p.partition("=")[2] for p in u.query if _secret_param(p))]
    found += [u.user or ""] if u.http else []
    found = [s for s in found if s]
    return sorted({*found, *(unquote(s) for s in found)}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` replaced by `***` (longest first)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def with_database_password(url: str, environ: Mapping[str, str] = os.environ) -> str:
    """`url`, completed with the password in the file `CAIRN_DATABASE_PASSWORD_FILE` names when
    it holds none and points at a server (see the module docstring for the order). Without the
    variable, `url` as it is: PostgreSQL's libpq then looks for PGPASSWORD, PGPASSFILE or
    ~/.pgpass itself."""
    path = environ.get(PASSWORD_FILE_VAR)
    u = _parse(url)
    if not path or u is None or u.password is not None or not u.where.split("/")[0]:
        return url  # no file, not a URL, the URL has its password, or no server (SQLite)
    password = quote(_read_password_file(Path(path).expanduser()), safe="")
    return u.text(u.user or "", password, u.query)


def _read_password_file(path: Path) -> str:
    try:
        return read_secret_file(path)
    except ValueError as e:
        raise CairnError(
            f"{PASSWORD_FILE_VAR}={path}: {e}; fix: point it at the file that holds the database "
            "password (a mounted secret), or unset it and supply the password another way (in "
            "CAIRN_DATABASE_URL, or PGPASSWORD / PGPASSFILE / ~/.pgpass for PostgreSQL)"
        ) from None


def read_secret_file(path: Path) -> str:
    """The secret in the file at `path`, less a final newline; ValueError saying what is wrong
    with the file (never what is in it)."""
    # Only a regular file: a FIFO or a device (say /dev/zero) would hang or never end.
    try:
        if not path.is_file():
            raise ValueError("no such file" if not path.exists() else "not a regular file")
        with path.open("rb") as f:
            data = f.read(SECRET_FILE_MAX_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror})") from e
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise ValueError(f"over {SECRET_FILE_MAX_BYTES // 1024} KiB, not a secret")
    try:
        # Secrets written with `echo` or by an editor end in a newline that is not part of them.
        secret = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if not secret:
        raise ValueError("empty")
    return secret
