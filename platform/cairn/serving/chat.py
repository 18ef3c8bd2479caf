"""The chat template used when a model's tokenizer has none, shared by both serving engines.

A model fresh out of `pretrain` has no chat template, and vLLM refuses every chat request without
one. Both engines are given this same template in that case (vLLM through `--chat-template`), so
a chat request turns into the same prompt, and the same greedy answer, whichever engine serves it.

The fallback renders each message as its role marker, its content and the end-of-text token:

    <|system|>You are terse.<|endoftext|><|user|>Hi<|endoftext|><|assistant|>

The role markers are the single-token chat roles the curate tokenizer reserves (`ROLES` in
`cairn.stages.curate.tokenizer`); any other tokenizer reads them as plain text, which still works.
A model post-trained with its own template (saved with its tokenizer) always uses that one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def has_chat_template(model_dir: Path) -> bool:
    """Whether the tokenizer saved in `model_dir` carries a chat template (read without loading
    it: transformers 5 writes `chat_template.jinja`, older versions a key in the config)."""
    if (model_dir / "chat_template.jinja").is_file() or (
        model_dir / "chat_template.json"
    ).is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    return False


def message_text(content: Any) -> str:
    """A message's content as one string: OpenAI clients send either a string or a list of parts
    ({"type": "text", "text": ...}); only text parts mean anything to a text-only model. Parts
    are joined with newlines, as vLLM joins them, so both engines see the same prompt."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ValueError(f"only text content parts are supported, got {part!r}")
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    raise ValueError(f"message content must be a string or a list of text parts, got {content!r}")
