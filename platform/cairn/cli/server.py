"""The commands of the team's front door: `cairn server` and `cairn token create|list|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

import cairn
from cairn.cli.app import JsonOpt, app, emit, err, fail, out
from cairn.errors import CairnError

token_app = typer.Typer(
    help="API tokens for `cairn server` (stored hashed in Cairn's database; shown once).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@app.command()
def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="no tokens: every request is the admin (loopback only, refused elsewhere)",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster (http://HEAD:8265) that submissions go to; default: run them "
            "on this machine"
        ),
    ] = None,
) -> None:
    """Serve the API (/api, OpenAPI at /docs), the dashboard (/) and /metrics.

    Tokens are on by default: on first start the server creates an admin token and prints it
    once. Give teammates their own with `cairn token create NAME --role viewer|submitter|admin`.
    State stays in Cairn's database (CAIRN_DATABASE_URL or $CAIRN_HOME): restart it at will.
    """
    from cairn.server.app import check_bind, create_app, serve
    from cairn.server.dashboard import warm

    client = cairn.Client()
    try:
        check_bind(host, not no_auth)
        first = None
        if not no_auth and not client.has_admin():
            first = client.create_token(_free_name(client, "admin"), "admin", by="cairn server")
    except CairnError as e:
        fail(e, False)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    err.print(f"Cairn server at [bold]{url}[/] (dashboard /, API /api, docs /docs, /metrics)")
    if no_auth:
        err.print("[yellow]no authentication[/]: every request acts as the admin (loopback only)")
    elif first:
        err.print("first admin token (shown once; keep it, e.g. in a password manager):")
        out.print(first, highlight=False)
        out.file.flush()  # a script reading our stdout gets it now, not when we exit
        err.print(f"  log in at {url}/ui/login, or: export CAIRN_SERVER={url} CAIRN_TOKEN=…")
    warm(client)
    serve(create_app(client, auth=not no_auth, ray_address=ray_address), host, port)


def _free_name(client: cairn.Client, base: str) -> str:
    taken = {t["name"] for t in client.tokens()}
    return next(n for n in (base, *(f"{base}-{i}" for i in range(2, 1000))) if n not in taken)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="who or what the token is for, e.g. alice or ci")],
    role: Annotated[
        str, typer.Option(help="viewer (reads), submitter (+ runs its own), admin (everything)")
    ] = "viewer",
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print its secret once (only its sha256 is stored)."""
    try:
        secret = _api().create_token(name, role)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit({"name": name, "role": role, "token": secret})
        return
    err.print(f"token [bold]{name}[/] ({role}); its secret, shown once:")
    out.print(secret, highlight=False)


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """The tokens: name, role, creator, last use (never a secret)."""
    try:
        found = _api().tokens()
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit({"tokens": found})
        return
    t = Table(box=None, header_style="bold")
    for col in ("name", "role", "created", "by", "last used", "revoked"):
        t.add_column(col)
    for k in found:
        t.add_row(
            str(k["name"]),
            str(k["role"]),
            str(k["created_at"] or "")[:19],
            str(k["created_by"] or ""),
            str(k["last_used_at"] or "")[:19],
            "yes" if k["revoked"] else "",
        )
    out.print(t)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="the token's name")], as_json: JsonOpt = False
) -> None:
    """Revoke a token: requests carrying it get 401 from now on."""
    try:
        _api().revoke_token(name)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit({"name": name, "revoked": True})
    else:
        out.print(f"token {name} revoked")


def _api():  # type: ignore[no-untyped-def]
    """The server (CAIRN_SERVER, with an admin's CAIRN_TOKEN) or the local database."""
    return cairn.connect()
