"""Reading a folder that someone else wrote, without trusting it: what `cairn audit` reads with.

A release bundle under audit is untrusted input. Whatever it holds or names, reading it must not
leave it, hang, or end in a traceback. So nothing here follows a symbolic link: the tree is walked
without following any, every path a bundle file names is checked before use (no `..`, no absolute
path, no control character), and a file is opened one directory at a time relative to the one
before (`dir_fd`, `O_NOFOLLOW`), so a link swapped in while the audit runs is refused too. Only
regular files are read (a FIFO or a device could block or have side effects): hashed in chunks,
and read whole only when small (JSON and SHA256SUMS, up to `MAX_TEXT`). JSON is checked against
the shape the reader needs, so a list where an object belongs is a finding that names the field,
not a `TypeError` later. Every refusal is a `Refused` whose message starts with the path.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from cairn.stage.files import sha256_stream

# Larger than any SHA256SUMS, lineage.json or manifest a release writes (a manifest takes about
# 150 bytes per file), small enough that parsing one cannot exhaust memory.
MAX_TEXT = 32 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: were a FIFO swapped in after the check, opening it must not wait for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Refused(Exception):
    """A path that is not read, and why; the message starts with the path. `missing` tells a
    file that is simply absent from one that is there but unfit (a link, a FIFO, bad JSON)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def shown(rel: str) -> str:
    """A path as a message shows it: quoted when it holds anything a reader could not see."""
    return rel if rel and rel.isprintable() and rel.strip() == rel else repr(rel)


def path_problem(rel: str) -> str | None:
    """Why `rel`, a path read from a file of the folder, cannot name a file inside it."""
    if not rel:
        return "is empty"
    if rel.startswith("/"):
        return "is an absolute path, which leaves the bundle"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "holds a control character"
    parts = rel.split("/")
    if ".." in parts:
        return "climbs out through '..', which leaves the bundle"
    if "" in parts or "." in parts:
        return "is not a plain relative path ('//', '.' or a trailing '/')"
    return None


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _what(st: os.stat_result, name: str, dir_fd: int | None = None) -> str:
    """What a non-regular entry is, said as the finding about it."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        try:
            target = repr(os.readlink(name, dir_fd=dir_fd))
        except OSError as e:
            target = f"unreadable: {e.strerror}"
        return (
            f"a symbolic link (to {target}), not a file: a bundle is judged on its own files, "
            "so links are not followed"
        )
    kind = next((k for test, k in _KINDS if test(mode)), "an unknown kind of file")
    return f"{kind}, not a regular file: not read"


class Folder:
    """A directory read without leaving it: its regular files and directories (found without
    following links), what else it holds (`odd`: path -> finding), and each file's sha256,
    computed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, int] = {}  # path -> size
        self.dirs: set[str] = set()
        self.odd: dict[str, str] = {}
        self._sha256: dict[str, str] = {}
        self._walk()

    def _walk(self) -> None:
        # Iterative, so a deep tree costs memory, not recursion; links are listed, not entered.
        todo = [""]
        while todo:
            rel = todo.pop()
            try:
                with os.scandir(self.root / rel) as it:
                    entries = list(it)
            except OSError as e:
                self.odd[rel or "."] = f"unreadable ({e.strerror})"
                continue
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as e:
                    self.odd[child] = f"unreadable ({e.strerror})"
                    continue
                if stat.S_ISDIR(st.st_mode):
                    self.dirs.add(child)
                    todo.append(child)
                elif stat.S_ISREG(st.st_mode):
                    self.files[child] = st.st_size
                else:
                    self.odd[child] = _what(st, entry.path)

    def not_a_file(self, rel: str, named_by: str, missing: str = "missing") -> str | None:
        """Why `rel`, a path that `named_by` gives, is not a regular file of the folder (None
        when it is), as a finding; `missing` is what to say when nothing is there."""
        if rel in self.files:
            return None
        if problem := path_problem(rel):
            return f"{named_by}: {shown(rel)} {problem}; not read"
        if rel in self.odd:
            return f"{shown(rel)}: {self.odd[rel]}"
        if rel in self.dirs:
            return f"{shown(rel)}: a directory, not a file"
        parts = rel.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in self.odd:  # the walk did not enter it: a link or unreadable
                return f"{shown(rel)}: not read, because {shown(above)} is not a directory"
        return f"{shown(rel)}: {missing}"

    def open(self, rel: str) -> BinaryIO:
        """Open a regular file of the folder for reading, refusing links and special files at
        every step; raises `Refused`."""
        if problem := path_problem(rel):
            raise Refused(f"{shown(rel)} {problem}; not read")
        parts = rel.split("/")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise Refused(f"{shown(rel)}: unreadable ({e.strerror})") from e
        try:
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                where = "/".join(parts[: i + 1])
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise Refused(f"{shown(rel)}: missing", missing=True) from None
                if last and not stat.S_ISREG(st.st_mode):
                    raise Refused(f"{shown(rel)}: {_what(st, name, fd)}")
                if not last and not stat.S_ISDIR(st.st_mode):
                    raise Refused(
                        f"{shown(rel)}: not read, because {shown(where)} is not a directory"
                    )
                nxt = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
                if not os.path.samestat(os.fstat(fd), st):
                    raise Refused(f"{shown(rel)}: replaced while being read; not read")
            return os.fdopen(fd, "rb")
        except OSError as e:  # e.g. ELOOP: a link put in place after the check
            os.close(fd)
            raise Refused(f"{shown(rel)}: unreadable ({e.strerror})") from e
        except BaseException:
            os.close(fd)
            raise

    def sha256(self, rel: str) -> str:
        """sha256 of a regular file of the folder, streamed; raises `Refused`."""
        if rel not in self._sha256:
            with self.open(rel) as f:
                try:
                    self._sha256[rel] = sha256_stream(f)
                except OSError as e:
                    raise Refused(f"{shown(rel)}: unreadable ({e.strerror})") from e
        return self._sha256[rel]

    def read(self, rel: str, limit: int = MAX_TEXT) -> bytes:
        """A small regular file's bytes (at most `limit`); raises `Refused`."""
        with self.open(rel) as f:
            try:
                data = f.read(limit + 1)
            except OSError as e:
                raise Refused(f"{shown(rel)}: unreadable ({e.strerror})") from e
        if len(data) > limit:
            raise Refused(f"{shown(rel)}: larger than {limit >> 20} MiB; not read")
        return data


class Opt:
    """In a shape: a field that may be absent or null."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape


class Values:
    """In a shape: an object whose every value has `shape` (its keys are free)."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape


_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value)[:40]


def misfit(value: Any, shape: Any, where: str = "") -> str | None:
    """The first place where `value` does not have `shape` ('FIELD: expected X, got Y'), or None.

    A shape is a type (str, int, bool), {field: shape} for an object (other fields are free),
    [shape] for a list of one shape, `Opt(shape)` or `Values(shape)`. Checking descends only as
    deep as the shape, however deep the value."""
    at = where or "the top level"
    if isinstance(shape, Opt):
        return None if value is None else misfit(value, shape.shape, where)
    if isinstance(shape, dict | Values):
        if not isinstance(value, dict):
            return f"{at}: expected an object, got {_kind(value)}"
        fields = shape.items() if isinstance(shape, dict) else ((k, shape.shape) for k in value)
        for key, sub in fields:
            field = f"{where}.{key}" if where else str(key)
            if key not in value:
                if isinstance(sub, Opt):
                    continue
                return f"{field}: missing"
            if found := misfit(value[key], sub, field):
                return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{at}: expected a list, got {_kind(value)}"
        for i, item in enumerate(value):
            if found := misfit(item, shape[0], f"{where}[{i}]"):
                return found
        return None
    if not isinstance(value, shape) or (shape is int and isinstance(value, bool)):
        return f"{at}: expected {_NAMES.get(shape, shape.__name__)}, got {_kind(value)}"
    return None


def parse_json(rel: str, data: bytes, shape: Any) -> Any:
    """`data`, the bytes of `rel`, as JSON of `shape`; raises `Refused` naming what is wrong."""
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Refused(
            f"{shown(rel)}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    except RecursionError:
        raise Refused(f"{shown(rel)}: nested too deeply to read as JSON") from None
    except ValueError as e:  # JSONDecodeError, or a number too long to convert
        raise Refused(f"{shown(rel)}: not valid JSON ({e})") from None
    if problem := misfit(value, shape):
        raise Refused(f"{shown(rel)}: {problem}")
    return value


__all__ = ["MAX_TEXT", "Folder", "Opt", "Refused", "Values", "misfit", "parse_json", "shown"]
