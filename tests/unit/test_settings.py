"""Settings from the environment, and the secrets in them: what a Ray job is handed (URLs without
their credentials), what is shown (masked), and where a password-less database URL finds its
password (the URL, CAIRN_DATABASE_PASSWORD_FILE, then libpq's own)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from cairn.errors import CairnError
from cairn.settings import (
    Settings,
    redact,
    scrub,
    strip_credentials,
    url_secrets,
    with_database_password,
)

SECRET = "s3cret-XYZ"


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        (
            f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/test",
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        ),
        # SQLAlchemy reads a password up to the next "@": "/", "?" and "#" are part of it.
        ("postgresql://cairn:a/b?c#d@db:5432/cairn", "postgresql://cairn@db:5432/cairn"),
        ("postgresql://cairn:p%40ss@db/cairn", "postgresql://cairn@db/cairn"),
        (
            f"postgresql://cairn@db/cairn?sslmode=require&password={SECRET}&application_name=x",
            "postgresql://cairn@db/cairn?sslmode=require&application_name=x",
        ),
        (f"postgresql://db/cairn?password={SECRET}", "postgresql://db/cairn"),
        # An HTTP client reads user info as credentials, even a bare token.
        (f"http://alice:{SECRET}@mlflow:5000", "http://mlflow:5000"),
        (
            f"https://{SECRET}@mlflow.example.com/path?x=1#top",
            "https://mlflow.example.com/path?x=1#top",
        ),
        (f"https://mlflow:5000/?access_token={SECRET}", "https://mlflow:5000/"),
        (f"s3://bucket/cairn?secret={SECRET}&region=eu", "s3://bucket/cairn?region=eu"),
    ],
)
def test_credentials_are_stripped_and_nothing_else_changes(url: str, stripped: str) -> None:
    assert strip_credentials(url) == stripped
    assert all(s not in stripped for s in url_secrets(url))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////abs/path/cairn.db",  # four slashes stay four
        "sqlite:///relative.db",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql://db/cairn?sslmode=verify-full&sslkey=/etc/key.pem",  # sslkey names a file
        "http://mlflow:5000",
        "http://[::1]:5000/x",
        "s3://bucket/path@v1/x",  # an "@" in a path is not user info
        "/mnt/shared/store",
        "relative/store",
    ],
)
def test_urls_without_secrets_come_back_unchanged(url: str) -> None:
    assert strip_credentials(url) == url
    assert redact(url) == url
    assert url_secrets(url) == []


def test_redact_masks_what_strip_removes() -> None:
    assert redact(f"postgresql://cairn:{SECRET}@db/x") == "postgresql://cairn:***@db/x"
    assert redact(f"http://alice:{SECRET}@mlflow:5000") == "http://***@mlflow:5000"
    assert (
        redact(f"postgresql://db/x?a=1&password={SECRET}") == "postgresql://db/x?a=1&password=***"
    )
    encoded = "postgresql://cairn:p%40ss%2Fw@db/x"
    assert url_secrets(encoded) == ["p%40ss%2Fw", "p@ss/w"]
    text = "could not connect with p@ss/w (p%40ss%2Fw)"
    assert scrub(text, url_secrets(encoded)) == "could not connect with *** (***)"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A deployment whose URLs all carry credentials, plus secrets that must never travel."""
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(
        "CAIRN_DATABASE_URL", f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/test"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{SECRET}@mlflow.example.com")
    monkeypatch.setenv("CAIRN_STORE", f"s3://bucket/cairn?token={SECRET}")
    for var in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, SECRET)
    return tmp_path


def test_the_env_another_process_gets_holds_no_secret(secret_env: Path) -> None:
    settings = Settings.from_env()
    env = settings.env()
    assert SECRET not in repr(env)
    assert env == {
        "CAIRN_HOME": str(secret_env / "home"),
        "CAIRN_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
        "CAIRN_STORE": "s3://bucket/cairn",
        "CAIRN_CHECKPOINTS": str(secret_env / "home" / "checkpoints"),
    }
    # The settings keep what this process was given: it connects with it.
    assert SECRET in settings.database_url
    assert SECRET not in repr(settings) and "postgres:***@" in repr(settings)


def test_each_withheld_credential_is_named_with_where_the_cluster_supplies_it(
    secret_env: Path,
) -> None:
    notes = Settings.from_env().withheld()
    assert len(notes) == 3 and all(SECRET not in n for n in notes)
    db, mlflow, store = notes
    assert db.startswith("CAIRN_DATABASE_URL goes to the job without its credentials, as ")
    assert "postgresql+psycopg://postgres@127.0.0.1:5432/test" in db
    assert "CAIRN_DATABASE_PASSWORD_FILE" in db and "PGPASSWORD" in db and "~/.pgpass" in db
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in mlflow
    assert store.startswith("CAIRN_STORE") and "AWS_" in store


def test_nothing_is_withheld_from_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env(tmp_path)
    assert settings.withheld() == []
    assert settings.env()["CAIRN_DATABASE_URL"] == f"sqlite:///{tmp_path / 'cairn.db'}"


# --- the password of a password-less database URL ------------------------------------------------

PASSWORDLESS = "postgresql+psycopg://cairn@db.internal:5432/cairn"


def password_file(tmp_path: Path, content: bytes) -> dict[str, str]:
    path = tmp_path / "db-password"
    path.write_bytes(content)
    return {"CAIRN_DATABASE_PASSWORD_FILE": str(path)}


def test_the_password_file_completes_a_url_without_one(tmp_path: Path) -> None:
    # A secret mounted by Kubernetes or written with `echo` ends in a newline: not the password.
    tricky = "p@ss/w:rd?#%é"
    env = password_file(tmp_path, f"{tricky}\n".encode())
    url = with_database_password(PASSWORDLESS, env)
    parsed = make_url(url)
    assert parsed.password == tricky and parsed.username == "cairn"
    assert (parsed.host, parsed.port, parsed.database) == ("db.internal", 5432, "cairn")


def test_the_password_in_the_url_comes_first_and_sqlite_needs_none(tmp_path: Path) -> None:
    env = password_file(tmp_path, b"from-the-file")
    in_url = "postgresql://cairn:from-the-url@db/cairn"
    assert with_database_password(in_url, env) == in_url
    assert with_database_password("sqlite:////x/cairn.db", env) == "sqlite:////x/cairn.db"
    # Without the variable the URL stays as it is: libpq looks for PGPASSWORD, ~/.pgpass itself.
    assert with_database_password(PASSWORDLESS, {}) == PASSWORDLESS


def make_fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda tmp: tmp / "missing", "no such file"),
        (lambda tmp: tmp, "not a regular file"),
        (make_fifo, "not a regular file"),  # reading it would wait for a writer forever
        (lambda tmp: Path("/dev/zero"), "not a regular file"),  # would never end
        (lambda tmp: _write(tmp / "empty", b"\n"), "empty"),
        (lambda tmp: _write(tmp / "big", b"x" * 70_000), "over 64 KiB"),
        (lambda tmp: _write(tmp / "binary", b"\xff\xfe"), "not UTF-8"),
    ],
)
def test_a_bad_password_file_is_refused_with_a_fix(tmp_path: Path, make, why: str) -> None:
    path = make(tmp_path)
    result: list[BaseException] = []

    def attempt() -> None:
        try:
            with_database_password(PASSWORDLESS, {"CAIRN_DATABASE_PASSWORD_FILE": str(path)})
        except BaseException as e:
            result.append(e)

    worker = threading.Thread(target=attempt, daemon=True)  # a hang guard, not a timing check
    worker.start()
    worker.join(30)
    assert result, f"{path}: still reading after 30 s"
    message = str(result[0])
    assert isinstance(result[0], CairnError)
    assert f"CAIRN_DATABASE_PASSWORD_FILE={path}: {why}" in message and "fix:" in message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
