"""The smoke test the serve stage runs on a fresh endpoint, through the official `openai` client.

A server that answers `/health` may still fail real requests (no chat template, a tokenizer that
cannot decode, a broken stream). Going through the client a user would use checks the endpoint
as they will see it: a completion and a chat completion per prompt and one streamed completion,
each recorded with its request, response and latency in the endpoint artifact.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cairn.serving.engines import ServingError


def smoke_test(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    max_tokens: int = 16,
    timeout_s: float = 120.0,
    api_key: str | None = None,
) -> list[dict[str, Any]]:
    """Run the requests against `base_url` (ending in /v1), with `api_key` when the server has
    one, and return their records; a request that fails raises ServingError.

    All are greedy (temperature 0), so they are reproducible, and the streamed text of the first
    prompt can be checked against its plain completion (`matches_completion`).
    """
    import openai

    if not prompts:
        raise ValueError("the smoke test needs at least one prompt")
    # Retries would hide a failing endpoint: a smoke test wants the first answer.
    client = openai.OpenAI(
        base_url=base_url, api_key=api_key or "cairn", timeout=timeout_s, max_retries=0
    )
    try:
        return _requests(client, model, prompts, max_tokens)
    except openai.OpenAIError as e:
        raise ServingError(
            f"the endpoint {base_url} failed its smoke test: {type(e).__name__}: {e}"
        ) from e


def _requests(client: Any, model: str, prompts: Sequence[str], max_tokens: int) -> list[dict]:
    records = []
    for prompt in prompts:
        request: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        start = time.perf_counter()
        done = client.completions.create(**request)
        records.append(
            _record(
                "completion",
                request,
                time.perf_counter() - start,
                done.choices[0].text,
                done.choices[0].finish_reason,
                done.usage,
            )
        )
        chat_request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        start = time.perf_counter()
        chat = client.chat.completions.create(**chat_request)
        records.append(
            _record(
                "chat",
                chat_request,
                time.perf_counter() - start,
                chat.choices[0].message.content or "",
                chat.choices[0].finish_reason,
                chat.usage,
            )
        )
    records.append(_stream(client, {**records[0]["request"], "stream": True}, records[0]))
    return records


def _stream(client: Any, request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """One streamed completion: its text, chunk count and time to the first chunk."""
    start = time.perf_counter()
    first_chunk_s: float | None = None
    pieces: list[str] = []
    chunks, finish = 0, None
    for chunk in client.completions.create(**request):
        chunks += 1
        if first_chunk_s is None:
            first_chunk_s = time.perf_counter() - start
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
    latency = time.perf_counter() - start
    text = "".join(pieces)
    record = _record("stream", request, latency, text, finish, None)
    record["response"]["chunks"] = chunks
    record["response"]["matches_completion"] = text == completion["response"]["text"]
    record["first_chunk_s"] = round(latency if first_chunk_s is None else first_chunk_s, 4)
    return record


def _record(
    kind: str, request: dict[str, Any], latency_s: float, text: str, finish: str | None, usage: Any
) -> dict[str, Any]:
    response: dict[str, Any] = {"text": text, "finish_reason": finish}
    if usage is not None:
        response["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
    return {
        "kind": kind,
        "request": request,
        "response": response,
        "latency_s": round(latency_s, 4),
    }
