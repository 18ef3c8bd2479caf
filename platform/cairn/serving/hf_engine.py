"""Token-by-token generation with `transformers`, as the transformers serving engine needs it.

`model.generate` hands back whole sequences; an OpenAI server also needs text as it grows (for
streaming), stop strings, per-token logprobs and a way to give up when the client goes away. So
this module runs the decoding loop itself: one forward pass over the prompt, then one per token
with the KV cache, greedy at temperature 0 (the same tokens as `generate(do_sample=False)`,
which tests/unit/test_serving.py checks) and temperature/top-p sampling otherwise.

Text is released in pieces that never need taking back: a piece ending inside a multi-byte
character, or that could be the start of a stop string, is held until the next token settles it
(and a character still incomplete at the end is dropped, as vLLM drops it).
Joining the pieces gives exactly the non-streamed text. One request runs at a time (a lock): a
CPU model gains nothing from interleaving requests, and the KV cache is per request anyway.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.serving.chat import FALLBACK_CHAT_TEMPLATE, message_text


class RequestError(ValueError):
    """A request the engine cannot serve as asked (the server answers 400 with this message)."""


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens for one request."""

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # how many alternatives per token; None: no logprobs


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Piece:
    """What one generated token adds: text that is now final (maybe ""), the token's logprob when
    asked for, and on the last piece why generation ended ("stop" or "length")."""

    text: str
    token_id: int | None
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None


class HFEngine:
    """A model and its tokenizer loaded once, generating for one request at a time."""

    def __init__(
        self,
        model_dir: str | Path,
        dtype: str = "auto",
        max_model_len: int | None = None,
        chat_template: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(self.model_dir)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        # safetensors only: a served folder may come from anywhere, and a .bin file is a pickle
        self.model: Any = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=torch_dtype, use_safetensors=True
        )
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_model_len = int(max_model_len or limit or 2048)
        if limit is not None and self.max_model_len > limit:
            raise ValueError(f"max_model_len {self.max_model_len} exceeds the model's {limit}")
        self.chat_template = (
            chat_template
            or getattr(self.tokenizer, "chat_template", None)
            or FALLBACK_CHAT_TEMPLATE
        )
        self.stop_ids = self._stop_token_ids()
        self._lock = threading.Lock()

    def _stop_token_ids(self) -> set[int]:
        """EOS as the tokenizer and the generation config name it (the latter may be a list)."""
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, Sequence):
                ids.update(int(i) for i in source)
        return ids

    # --- prompts -------------------------------------------------------------------------------

    def encode(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a completion prompt (special tokens added as the tokenizer does, as vLLM
        does); a list of ints is taken as token ids already."""
        if isinstance(prompt, str):
            ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            ids = [int(i) for i in prompt]
            if any(not 0 <= i < len(self.tokenizer) for i in ids):
                raise RequestError(f"prompt token ids must be in [0, {len(self.tokenizer)})")
        if not ids:
            raise RequestError("the prompt is empty: it encodes to no tokens")
        return ids

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of a chat, rendered with the chat template plus the assistant's turn. The
        rendered text is tokenized without adding special tokens: the template places them."""
        if not messages:
            raise RequestError("messages must not be empty")
        try:
            turns = [
                {"role": m["role"], "content": message_text(m.get("content"))} for m in messages
            ]
            text = self.tokenizer.apply_chat_template(
                turns, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
            )
        except (KeyError, ValueError, TypeError) as e:
            raise RequestError(f"cannot render the messages with the chat template: {e}") from e
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise RequestError("the rendered chat is empty")
        return ids

    def budget(self, prompt_ids: list[int], max_tokens: int | None) -> int:
        """Tokens this request may generate: `max_tokens` clipped to the context that is left
        (as vLLM does), the whole rest of the context when None."""
        if max_tokens is not None and max_tokens < 1:
            raise RequestError("max_tokens must be at least 1")
        room = self.max_model_len - len(prompt_ids)
        if room <= 0:
            raise RequestError(
                f"this model's maximum context length is {self.max_model_len} tokens, and the "
                f"prompt has {len(prompt_ids)}; fix: shorten the prompt"
            )
        return room if max_tokens is None else min(max_tokens, room)

    # --- generation ----------------------------------------------------------------------------

    def generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[Piece]:
        """Generate for one prompt, yielding a `Piece` per token; the last has finish_reason."""
        import torch

        budget = self.budget(prompt_ids, sampling.max_tokens)
        generator = torch.Generator()
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()  # this request's own random seed; the global RNG is left alone
        text = _TextAssembler(self.tokenizer, sampling.stop)
        with self._lock, torch.inference_mode():
            inputs = torch.tensor([prompt_ids])
            cache = None
            for step in range(budget):
                if cancelled():
                    return
                out = self.model(input_ids=inputs, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logits = out.logits[0, -1].float()
                token = _pick(logits, sampling, generator)
                logprob = self._logprob(logits, token, sampling.logprobs)
                if token in self.stop_ids:
                    # EOS ends the text but is not part of it (vLLM skips special tokens too).
                    yield Piece(text.finish(), token, logprob, "stop")
                    return
                piece, hit_stop = text.add(token)
                if hit_stop:
                    yield Piece(piece, token, logprob, "stop")
                    return
                if step == budget - 1:
                    yield Piece(piece + text.finish(), token, logprob, "length")
                    return
                yield Piece(piece, token, logprob)
                inputs = torch.tensor([[token]])

    def _logprob(self, logits: Any, token: int, top: int | None) -> TokenLogprob | None:
        import torch

        if top is None:
            return None
        logprobs = torch.log_softmax(logits, dim=-1)
        alternatives = torch.topk(logprobs, top).indices.tolist() if top > 0 else []
        return TokenLogprob(
            token=self.tokenizer.decode([token]),
            logprob=_finite(logprobs[token].item()),
            top=[(self.tokenizer.decode([i]), _finite(logprobs[i].item())) for i in alternatives],
        )


def _finite(x: float) -> float:
    # JSON has no -inf; a token of probability 0 gets the most negative float instead.
    return x if math.isfinite(x) else -3.4e38


def _pick(logits: Any, sampling: Sampling, generator: Any) -> int:
    """The next token: argmax at temperature 0, else a draw from the tempered top-p distribution."""
    import torch

    if sampling.temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest head of the distribution whose mass reaches top_p (at least 1 token).
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= sampling.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class _TextAssembler:
    """Turns generated tokens into text pieces that are final: see the module docstring."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False

    def _decode(self) -> str:
        return str(
            self.tokenizer.decode(
                self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def add(self, token: int) -> tuple[str, bool]:
        """The new final text after `token`, and whether a stop string was reached."""
        self.ids.append(token)
        full = self._decode()
        cut = min((i for s in self.stop if (i := full.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._take(full[:cut]), True
        # U+FFFD at the end is a multi-byte character whose last bytes have not come yet.
        settled = full.rstrip("\ufffd")
        return self._take(settled[: max(len(self.emitted), len(settled) - self.hold)]), False

    def finish(self) -> str:
        """Whatever is still held back, now that no token follows. A character whose bytes never
        completed is dropped rather than sent as U+FFFD, as vLLM's detokenizer does, so both
        engines return the same text for the same tokens."""
        return "" if self.stopped else self._take(self._decode().rstrip("\ufffd"))

    def _take(self, upto: str) -> str:
        if not upto.startswith(self.emitted):
            # Decoding one more token rewrote earlier text (never seen with byte-level BPE);
            # keep what was sent and send nothing more rather than contradict it.
            return ""
        piece, self.emitted = upto[len(self.emitted) :], upto
        return piece
