"""The transformers engine's HTTP server: the OpenAI API subset that Cairn serves, on FastAPI.

Where vLLM cannot run, `python -m cairn.serving.hf_server --model DIR ...` answers the same
requests vLLM's server does, so clients and tests never care which engine is behind a URL:
`/health`, `/v1/models`, `/v1/completions` and `/v1/chat/completions` (streamed as server-sent
events when `stream` is true, ending with `data: [DONE]`). Errors have OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`: 400 for a request it cannot serve, 404 for a
model name it does not serve. With an API key (`CAIRN_SERVE_API_KEY` in its environment, as
`cairn.serving.access` describes), requests under /v1 without `Authorization: Bearer KEY` get 401,
as from vLLM. Generation is in `hf_engine.py`, the API's shapes in `openai_api.py`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from cairn.serving import access
from cairn.serving import openai_api as api
from cairn.serving.engines import API_KEY_ENV
from cairn.serving.hf_engine import HFEngine, RequestError


def create_app(engine: HFEngine, served_model_name: str, api_key: str | None = None) -> FastAPI:
    """The app serving `engine` under the name `served_model_name`; with `api_key`, only to
    requests that carry it."""
    app = FastAPI(title="Cairn transformers engine", docs_url=None, redoc_url=None)
    created = int(time.time())
    if api_key:
        digest = access.key_digest(api_key)

        @app.middleware("http")
        async def _authenticate(
            request: Request, call_next: Callable[[Request], Awaitable[Any]]
        ) -> Any:
            # As vLLM: /health stays open for probes, and so do CORS preflights.
            guarded = request.url.path.startswith(access.GUARDED_PREFIX)
            if (
                guarded
                and request.method != "OPTIONS"
                and not access.authorized(request.headers.get("authorization"), digest)
            ):
                return api.APIError(
                    401,
                    "a valid API key is required: send it as `Authorization: Bearer KEY` "
                    "(the openai client's api_key)",
                    "AuthenticationError",
                ).response()
            return await call_next(request)

    @app.exception_handler(api.APIError)
    async def _api_error(_: Request, e: api.APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, e: RequestError) -> JSONResponse:
        return api.APIError(400, str(e), "BadRequestError").response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err["type"] == "json_invalid" for err in errors):
            return api.APIError(
                400, "the request body is not valid JSON", "BadRequestError"
            ).response()
        # loc is ("body", field, ...): name the field, as OpenAI's `param` does.
        fields = [".".join(str(p) for p in err["loc"][1:]) or "body" for err in errors]
        message = "; ".join(f"{f}: {err['msg']}" for f, err in zip(fields, errors, strict=True))
        return api.APIError(
            400, message, "BadRequestError", fields[0] if fields else None
        ).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException) -> JSONResponse:
        kind = "NotFoundError" if e.status_code == 404 else "BadRequestError"
        return api.APIError(e.status_code, str(e.detail), kind).response()

    def check_model(name: str) -> None:
        if name != served_model_name:
            raise api.APIError(
                404,
                f"The model `{name}` does not exist. Valid aliases: {served_model_name}.",
                "NotFoundError",
                "model",
            )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {
            "id": served_model_name,
            "object": "model",
            "created": created,
            "owned_by": "cairn",
            "root": str(engine.model_dir),
            "max_model_len": engine.max_model_len,
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions", response_model=None)
    def completions(req: api.CompletionRequest) -> dict[str, Any] | StreamingResponse:
        check_model(req.model)
        if req.echo:
            raise api.APIError(
                400, "echo is not supported by the transformers engine", "BadRequestError", "echo"
            )
        encoded = [engine.encode(p) for p in api.prompts(req.prompt)]
        sampling = req.sampling(req.max_tokens, req.logprobs)
        for ids in encoded:
            engine.budget(ids, sampling.max_tokens)  # a prompt too long fails now, not mid-stream
        head = api.head("cmpl", "text_completion", served_model_name)
        if req.stream:

            def produce(emit: api.Emit, cancelled: Callable[[], bool]) -> None:
                completion_tokens = 0
                for index, ids in enumerate(encoded):
                    offset = 0
                    for piece in engine.generate(ids, sampling, cancelled):
                        completion_tokens += piece.token_id is not None
                        if piece.text or piece.finish_reason or piece.logprob:
                            lp = api.completion_logprobs([piece], offset) if piece.logprob else None
                            offset += len(piece.logprob.token) if piece.logprob else 0
                            choice = {"index": index, "text": piece.text, "logprobs": lp}
                            emit(
                                head
                                | {"choices": [choice | {"finish_reason": piece.finish_reason}]}
                            )
                if (req.stream_options or {}).get("include_usage"):
                    usage = api.usage(sum(len(i) for i in encoded), completion_tokens)
                    emit(head | {"choices": [], "usage": usage})

            return api.sse(produce)
        choices, completion_tokens = [], 0
        for index, ids in enumerate(encoded):
            pieces = list(engine.generate(ids, sampling))
            completion_tokens += sum(p.token_id is not None for p in pieces)
            choices.append(
                {
                    "index": index,
                    "text": "".join(p.text for p in pieces),
                    "logprobs": api.completion_logprobs(pieces, 0)
                    if sampling.logprobs is not None
                    else None,
                    "finish_reason": pieces[-1].finish_reason if pieces else None,
                }
            )
        return head | {
            "choices": choices,
            "usage": api.usage(sum(len(i) for i in encoded), completion_tokens),
        }

    @app.post("/v1/chat/completions", response_model=None)
    def chat(req: api.ChatRequest) -> dict[str, Any] | StreamingResponse:
        check_model(req.model)
        ids = engine.encode_chat(req.messages)
        top = (req.top_logprobs or 0) if req.logprobs else None
        sampling = req.sampling(req.max_completion_tokens or req.max_tokens, top)
        engine.budget(ids, sampling.max_tokens)
        kind = "chat.completion.chunk" if req.stream else "chat.completion"
        head = api.head("chatcmpl", kind, served_model_name)
        if req.stream:

            def produce(emit: api.Emit, cancelled: Callable[[], bool]) -> None:
                first = {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                }
                emit(head | {"choices": [first | {"finish_reason": None}]})
                n = 0
                for piece in engine.generate(ids, sampling, cancelled):
                    n += piece.token_id is not None
                    if piece.text or piece.finish_reason or piece.logprob:
                        delta = {"content": piece.text} if piece.text else {}
                        lp = api.chat_logprobs([piece]) if piece.logprob else None
                        choice = {"index": 0, "delta": delta, "logprobs": lp}
                        emit(head | {"choices": [choice | {"finish_reason": piece.finish_reason}]})
                if (req.stream_options or {}).get("include_usage"):
                    emit(head | {"choices": [], "usage": api.usage(len(ids), n)})

            return api.sse(produce)
        pieces = list(engine.generate(ids, sampling))
        message = {"role": "assistant", "content": "".join(p.text for p in pieces)}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": api.chat_logprobs(pieces) if top is not None else None,
            "finish_reason": pieces[-1].finish_reason if pieces else None,
        }
        n = sum(p.token_id is not None for p in pieces)
        return head | {"choices": [choice], "usage": api.usage(len(ids), n)}

    return app


def main(argv: list[str] | None = None) -> None:
    """Load the model, then serve it until SIGTERM/SIGINT (uvicorn stops gracefully on both)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--served-model-name", default=None, help="default: the directory name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--chat-template", type=Path, default=None, help="a Jinja template file")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    import uvicorn

    start = time.monotonic()
    template = args.chat_template.read_text(encoding="utf-8") if args.chat_template else None
    engine = HFEngine(
        args.model, dtype=args.dtype, max_model_len=args.max_model_len, chat_template=template
    )
    name = args.served_model_name or Path(args.model).name
    print(
        f"cairn transformers engine: loaded {args.model} in {time.monotonic() - start:.1f} s",
        flush=True,
    )
    uvicorn.run(
        create_app(engine, name, os.environ.get(API_KEY_ENV) or None),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
