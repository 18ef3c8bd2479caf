"""A source file's bytes as a stream: opened, decompressed and cut into lines, in bounded pieces.

A file of any size, compressed or not, local or behind fsspec, is read chunk by chunk, so a
reader holds one chunk and one line at a time. Where the bytes stop making sense (a truncated or
corrupt .gz or .zst) the stream raises `Broken` with how far it got, so the reader can keep the
records before that point and report the rest as one corrupt record.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from typing import IO

import fsspec

from cairn.errors import StageError
from cairn.stages.curate.sources import SourceFile

_CHUNK = 1 << 20  # bytes read (or decompressed) at a time
_ZSTD_IN = 1 << 16  # compressed bytes read at a time from a .zst file
_ZSTD_PIECE = 1 << 10  # compressed bytes decoded at a time: bounds what one step can output


class Broken(Exception):
    """The byte stream of a file ended early or could not be decoded at `offset`."""

    def __init__(self, cause: BaseException, offset: int) -> None:
        super().__init__(str(cause))
        self.cause, self.offset = cause, offset


@contextlib.contextmanager
def open_file(file: SourceFile) -> Iterator[IO[bytes]]:
    try:
        if "://" in file.url:
            with fsspec.open(file.url, "rb") as f:
                yield f
        else:
            with open(file.url, "rb") as f:
                yield f
    except FileNotFoundError as e:
        raise StageError(
            f"{file.origin}: the file is gone ({e}); it was listed when the step started, so "
            "the source changed while curate ran: run the step again"
        ) from e
    except OSError as e:  # reading errors are turned into corrupt_file records; this is opening
        raise StageError(f"{file.origin}: cannot open the file ({e}); check its access") from e


def chunks(f: IO[bytes], name: str) -> Iterator[bytes]:
    """The file's decompressed bytes, in chunks; `Broken` where they stop making sense."""
    offset = 0
    lower = name.lower()
    try:
        if lower.endswith(".gz"):
            g = gzip.GzipFile(fileobj=f, mode="rb")
            # read1: what one step of decompression gives, so the text before a truncation
            # is yielded before the error (read() would discard its partly filled buffer).
            while chunk := g.read1(_CHUNK):
                offset += len(chunk)
                yield chunk
        elif lower.endswith(".zst"):
            for chunk in _zstd(f):
                offset += len(chunk)
                yield chunk
        else:
            while chunk := f.read(_CHUNK):
                offset += len(chunk)
                yield chunk
    except (OSError, EOFError, zlib.error, _ZstdError) as e:
        raise Broken(e, offset) from e


class _ZstdError(Exception):
    pass


def _zstd(f: IO[bytes]) -> Iterator[bytes]:
    # zstandard's stream_reader and read_to_iter return a truncated frame as if it were
    # complete, so frames are decoded one by one with decompressobj, and a frame still open when
    # the input ends is reported. decompressobj has no output limit, so it is fed small pieces:
    # very repetitive text expands by thousands, and 64 KiB of it came out as one 275 MB string
    # (1 KiB pieces: at most a few MB; they decode ~250 MB/s, far faster than JSON is parsed).
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame, fed = dctx.decompressobj(), 0
    while block := f.read(_ZSTD_IN):
        view = memoryview(block)
        for pos in range(0, len(view), _ZSTD_PIECE):
            piece = view[pos : pos + _ZSTD_PIECE]
            try:
                out = frame.decompress(piece)
                fed += len(piece)
                while frame.eof:  # the frame is complete; what follows it starts the next one
                    rest = frame.unused_data
                    frame, fed = dctx.decompressobj(), len(rest)
                    if rest:
                        out += frame.decompress(rest)
            except zstandard.ZstdError as e:
                raise _ZstdError(str(e)) from e
            if out:
                yield out
    if fed:
        raise _ZstdError("the file ends in the middle of a zstd frame (truncated)")


def lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines without their b"\\n". A last line cut off by `Broken` is never yielded."""
    parts: list[bytes] = []
    for chunk in chunks:
        if b"\n" not in chunk:
            parts.append(chunk)  # a line longer than a chunk: joined once, not re-copied
            continue
        lines = chunk.split(b"\n")
        if parts:
            parts.append(lines[0])
            lines[0] = b"".join(parts)
            parts = []
        tail = lines.pop()
        if tail:
            parts.append(tail)
        yield from lines
    if parts:
        yield b"".join(parts)
