"""Validate OpenLineage events against the spec's JSON schemas, read from disk (never the network):
the core schema for the event, and each facet against its own schema where one is here
(`spec/README.md` says which, and from where) or, for Cairn's facets, shipped with Cairn. And a
lineage server in miniature (`Endpoint`) that receives events over HTTP."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).parent / "spec"
CORE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
OLDER_CORES = ["1-0-1", "1-0-2"]  # what vendored facet files reference (see spec/README.md)

# jsonschema checks `date-time` and `uri` only with optional packages; these are exact enough.
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@FORMATS.checks("uri", raises=ValueError)
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme)


@FORMATS.checks("uuid", raises=ValueError)
def _uuid(value: object) -> bool:
    return not isinstance(value, str) or str(uuid.UUID(value)) == value.lower()


@cache
def _schemas() -> tuple[Registry, dict[str, str], str]:
    """The registry of every schema, the vendored facet files by name (to their `$id`), and the
    `$id` of Cairn's own facets."""
    core = json.loads((SPEC / "OpenLineage.json").read_text())
    pairs = [(CORE, core)] + [
        (f"https://openlineage.io/spec/{v}/OpenLineage.json", core) for v in OLDER_CORES
    ]
    by_name = {}
    for p in sorted((SPEC / "facets").glob("*.json")):
        schema = json.loads(p.read_text())
        pairs.append((schema["$id"], schema))
        by_name[p.name] = schema["$id"]
    cairn = json.loads(
        resources.files("cairn.engine").joinpath("openlineage_facets.json").read_text()
    )
    pairs.append((cairn["$id"], cairn))
    registry = Registry().with_resources(
        (uri, Resource.from_contents(s, default_specification=DRAFT202012)) for uri, s in pairs
    )
    return registry, by_name, cairn["$id"]


def _check(ref: str, instance: Any) -> None:
    registry, _, _ = _schemas()
    Draft202012Validator({"$ref": ref}, registry=registry, format_checker=FORMATS).validate(
        instance
    )


def validate(event: dict[str, Any]) -> set[str]:
    """Raise `jsonschema.ValidationError` unless `event` is a valid RunEvent whose every facet
    is valid; returns the names of the facets checked against a schema of their own."""
    _check(f"{CORE}#/$defs/RunEvent", event)
    _, by_name, cairn_id = _schemas()
    bags = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    for d in event.get("inputs", []) + event.get("outputs", []):
        bags += [d.get("facets", {}), d.get("inputFacets", {}), d.get("outputFacets", {})]
    checked = set()
    for bag in bags:
        for name, facet in bag.items():
            base, _, pointer = facet["_schemaURL"].partition("#")
            if base == cairn_id:
                _check(facet["_schemaURL"], facet)
            elif (file := base.rsplit("/", 1)[-1]) in by_name:
                _check(f"{by_name[file]}#{pointer}", facet)
            else:
                continue
            checked.add(name)
    return checked


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    event: dict[str, Any]


class Endpoint(ThreadingHTTPServer):
    """Keeps what is POSTed to it and answers 200; serves on a thread while used as `with`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Endpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.received.append(Received(self.path, dict(self.headers), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # tests read what arrived, not an access log
