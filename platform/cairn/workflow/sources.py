"""External inputs of a workflow: a local path or `file://` (relative to the workflow file), or an
fsspec URL (`s3://…`, `simplecache::s3://…`).

`cairn validate` looks at each one so that a wrong path fails before anything runs, with the
reason in words: missing, a symbolic-link loop, `~user` of no such user, a NUL byte, a name too
long for the filesystem, permission denied, an unknown URL scheme (which would otherwise fail
the run after Ray has started) or one whose fsspec package is not installed. What a folder
holds (empty, unreadable files) is the stage's business at run time.

An external input may be written as a mapping that states its licence, `{source: PATH, license:
TEXT}` (`written`): the licence is named, not quoted, since cards, tags and tables show it on one
line.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.stage import ArtifactType
from cairn.workflow.messages import short, suggest
from cairn.workflow.model import SOURCE_KEYS, Ref, is_uri

# The most characters a source's `license:` may have: an SPDX expression or a licence's name.
MAX_LICENSE = 200


@dataclass(frozen=True)
class Problem:
    """Why an external input cannot be used, and what to do."""

    message: str
    fix: str


def written(item: Any) -> tuple[str, str | None] | list[tuple[tuple[str, ...], Problem]]:
    """(reference text, stated licence) of one input as written, a plain reference or a source
    written as `{source: PATH, license: TEXT}`; or what is wrong with the mapping, each problem
    with the key it is about (() for the mapping itself)."""
    if not isinstance(item, dict):
        return str(item), None
    problems: list[tuple[tuple[str, ...], Problem]] = []
    unknown = [str(k) for k in item if k not in SOURCE_KEYS]
    if unknown:  # one problem, at the first: a hostile file may hold thousands
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        fix = suggest(
            unknown[0],
            list(SOURCE_KEYS),
            "a source written as a mapping takes `source:` (its path or URI) and `license:` "
            "(e.g. apache-2.0)",
        )
        problems.append(
            ((unknown[0],), Problem(f"unknown field '{short(unknown[0])}' in a source{more}", fix))
        )
    text, license = item.get("source"), item.get("license", "")
    if "source" not in item:
        problems.append(
            (
                (),
                Problem(
                    "a source written as a mapping needs `source:`",
                    "add `source: ./path` (the path or URI of the data or model directory)",
                ),
            )
        )
    elif not isinstance(text, str) or not text.strip():
        problems.append(
            (
                ("source",),
                Problem(
                    f"must be a path or URI, not {short(repr(text))}",
                    "write the path, e.g. `source: ./base-model`",
                ),
            )
        )
    if "license" in item and (not isinstance(license, str) or not license.strip()):
        problems.append(
            (
                ("license",),
                Problem(
                    f"must be the licence's name as text, not {short(repr(license))}",
                    "write an SPDX id such as `license: apache-2.0`, or leave `license:` out "
                    "(the release then says the licence is not declared)",
                ),
            )
        )
    elif len(str(license)) > MAX_LICENSE:
        problems.append(
            (
                ("license",),
                Problem(
                    f"is {len(str(license)):,} characters long; a licence is named here, not "
                    f"quoted (at most {MAX_LICENSE})",
                    "give its SPDX id or name (e.g. `license: llama3.2`), and keep the full text "
                    "in a LICENSE file beside the data, which is digested with it",
                ),
            )
        )
    return problems or (str(text), str(license).strip() or None)


def resolve(text: str, want: ArtifactType, folder: Path) -> Ref | Problem:
    """The input `text` as a `Ref` to an absolute path or URL of type `want`, or the problem."""
    if "\0" in text:  # a double-quoted "\0" in the YAML; the OS refuses such a path
        return Problem(
            f"source {short(text)!r} contains a NUL character", "remove the \\0 from the path"
        )
    if is_uri(text):
        if want not in (ArtifactType.RAW, ArtifactType.MODEL):
            return Problem(
                f"an external source cannot be a {want.value}",
                "produce it with a step, or pass raw data / a model directory",
            )
        return _scheme_problem(text) or Ref(text=text, uri=text)
    raw = text.removeprefix("file://")
    try:
        p = Path(raw).expanduser()
    except RuntimeError:  # `~user` of an unknown user, or `~` with no home folder
        user = short(raw[1:].partition("/")[0])
        return Problem(
            f"cannot expand '~{user}' in source '{short(text)}': "
            + (f"there is no user '{user}' here" if user else "there is no home folder"),
            "write the full path instead",
        )
    relative = not p.is_absolute()
    if relative:
        p = folder / p
    try:
        if relative:
            p = p.resolve()
        mode = p.stat().st_mode
        is_model = stat.S_ISDIR(mode) and (p / "config.json").exists()
    except (FileNotFoundError, NotADirectoryError):
        return Problem(
            f"source '{short(text)}' does not exist (looked for {short(p, 200)})",
            "fix the path; relative paths are relative to the workflow file",
        )
    except RuntimeError:  # Python 3.11's Path.resolve on a symlink loop
        return _loop(text, p)
    except OSError as e:
        return _os_problem(text, p, e)
    have = ArtifactType.MODEL if is_model else ArtifactType.RAW
    if have != want:
        what = "a Hugging Face model directory" if is_model else "raw data"
        return Problem(
            f"'{short(text)}' is {what}, but this input needs a {want.value}",
            f"give {'raw data files' if want == ArtifactType.RAW else 'a model directory with config.json'}"
            if want in (ArtifactType.RAW, ArtifactType.MODEL)
            else f"produce the {want.value} with a step and reference it as step.output",
        )
    return Ref(text=text, uri=str(p))


def _scheme_problem(text: str) -> Problem | None:
    """What is wrong with a URL's scheme(s), or None."""
    import fsspec  # only a workflow with a URL pays for it
    from fsspec.registry import known_implementations

    for part in text.split("::"):  # fsspec chains: simplecache::s3://bucket/key
        scheme = part.partition("://")[0]
        try:
            fsspec.get_filesystem_class(scheme)
        except ValueError:
            common = [
                s for s in ("s3", "gs", "az", "hf", "https", "memory") if s in known_implementations
            ]
            return Problem(
                f"unknown URL scheme '{short(scheme)}://' in '{short(text)}'",
                suggest(
                    scheme,
                    sorted(known_implementations),
                    f"use a scheme fsspec knows ({', '.join(f'{s}://' for s in common)}, ...), "
                    "or a local path starting with ./ or /",
                ),
            )
        except ImportError as e:
            module = known_implementations.get(scheme, {}).get("class", "").partition(".")[0]
            package = module if module and module != "fsspec" else getattr(e, "name", None)
            return Problem(
                f"reading '{short(scheme)}://' needs a package that is not installed ({e})",
                f"pip install {package}" if package else f"install what it needs: {e}",
            )
    return None


def _loop(text: str, p: Path) -> Problem:
    return Problem(
        f"source '{short(text)}' is a symbolic link that leads back to itself (a loop)",
        f"point the link at the data itself (look at {short(p, 200)})",
    )


def _os_problem(text: str, p: Path, e: OSError) -> Problem:
    """The OS's refusal to look at a source, in words."""
    if e.errno == errno.ELOOP:
        return _loop(text, p)
    if e.errno == errno.ENAMETOOLONG:
        return Problem(
            f"source '{short(text)}': a name in the path is longer than the filesystem allows",
            "shorten the file or folder name",
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        return Problem(
            f"source '{short(text)}' cannot be looked at: permission denied "
            f"({short(e.filename or p, 200)})",
            "make it readable to the user running cairn, or copy the data somewhere readable",
        )
    return Problem(
        f"source '{short(text)}' cannot be looked at: {e.strerror or e}",
        "check the path and the disk it is on",
    )
