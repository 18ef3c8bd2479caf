"""The OpenAI API's shapes, for the transformers engine's server: requests, responses, errors,
and the server-sent-event stream.

Kept apart from the app (`hf_server.py`) so that the routes read as what they do, and matched
field by field to what vLLM's server sends (checked by tests/integration/test_serve.py, which
drives both through the official `openai` client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from cairn.serving.hf_engine import Piece, RequestError, Sampling

Emit = Callable[[dict[str, Any]], None]


class APIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": error | {"code": self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class _Request(BaseModel):
    # Clients send fields this engine has no use for (user, presence_penalty at 0, ...): ignore.
    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = 1
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None

    def sampling(self, max_tokens: int | None, logprobs: int | None) -> Sampling:
        if self.n not in (None, 1):
            raise APIError(
                400, "n > 1 is not supported by the transformers engine", "BadRequestError", "n"
            )
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=stop,
            seed=self.seed,
            logprobs=logprobs,
        )


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's (and vLLM's) default for completions
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool | None = False


class ChatRequest(_Request):
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """The prompts of a completion request: one string, one list of token ids, or a list of
    either (a batch, answered with one choice per prompt)."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)  # type: ignore[arg-type]


def head(prefix: str, kind: str, model: str) -> dict[str, Any]:
    """The fields every response and chunk of one request share."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


def completion_logprobs(pieces: list[Piece], offset: int) -> dict[str, Any]:
    """The legacy completions logprobs object: parallel lists, one entry per token."""
    out: dict[str, list[Any]] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    for p in pieces:
        if p.logprob is None:
            continue
        out["tokens"].append(p.logprob.token)
        out["token_logprobs"].append(p.logprob.logprob)
        out["top_logprobs"].append(dict(p.logprob.top))
        out["text_offset"].append(offset)
        offset += len(p.logprob.token)
    return out


def chat_logprobs(pieces: list[Piece]) -> dict[str, Any]:
    """The chat logprobs object: one entry per token with its top alternatives."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = [
        entry(p.logprob.token, p.logprob.logprob)
        | {"top_logprobs": [entry(t, lp) for t, lp in p.logprob.top]}
        for p in pieces
        if p.logprob is not None
    ]
    return {"content": content}


_END = object()


def sse(
    produce: Callable[[Callable[[dict[str, Any]], None], Callable[[], bool]], None],
) -> StreamingResponse:
    """Stream what `produce(emit, cancelled)` emits as server-sent events, then `[DONE]`.

    Generation runs in its own thread and hands chunks to the event loop through a queue, so a
    slow forward pass never blocks the loop; when the client goes away, `cancelled()` turns true
    and generation stops at the next token (releasing the engine for the next request).
    """

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is going down
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                produce(emit, stop.is_set)
            except RequestError as e:
                emit(APIError(400, str(e), "BadRequestError").body())
            except Exception as e:  # told to the client (the stream has begun), and logged
                emit(APIError(500, f"{type(e).__name__}: {e}", "InternalServerError").body())
                raise
            finally:
                emit(_END)

        threading.Thread(target=work, name="cairn-generate", daemon=True).start()
        try:
            while (item := await queue.get()) is not _END:
                yield f"data: {json.dumps(item)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            stop.set()

    return StreamingResponse(events(), media_type="text/event-stream")
