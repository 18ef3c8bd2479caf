"""The chat format: the template that turns turns into tokens, and the checks of the input model.

Cairn's tokenizer (curate) reserves `<|system|>`, `<|user|>` and `<|assistant|>` as single special
tokens and uses `<|endoftext|>` (its EOS) to end each turn, so a generation stops where a turn
would end:

    <|system|>\\nBe brief.<|endoftext|><|user|>\\nWhich play ...?<|endoftext|><|assistant|>\\nHamlet.<|endoftext|>

The newline after each role token mirrors ChatML and keeps the text after it tokenized as at the
start of a line of the pretraining corpus. The assistant's text and its closing EOS sit inside
`{% generation %}` so `return_assistant_tokens_mask` (what TRL's `assistant_only_loss` uses)
marks exactly the tokens the model must learn to produce, the stop included.

A model whose tokenizer already has a chat template keeps it (sft needs `{% generation %}`
markers in it); one with neither a template nor the role tokens is rejected before training.
Heavy imports (transformers) happen inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import StageError
from cairn.stages.posttrain.data import Example

if TYPE_CHECKING:
    from cairn.stages.posttrain.recipe import Recipe

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\n' -}}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- elif message['role'] == 'system' or message['role'] == 'user' -%}"
    "{{- '<|' + message['role'] + '|>\n' + message['content'] + eos_token -}}"
    "{%- else -%}"
    "{{- raise_exception('unknown chat role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

# Only safetensors: pytorch_model.bin and other torch.save files are pickles, and loading one
# can run code it names; an input model is a folder a user may have been handed.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ModelInfo:
    """What the driver learned about the input model, for the checks and the workers."""

    path: Path
    chat_template: str  # the template the run trains with (and saves with the output)
    own_template: bool  # the tokenizer came with it (else it is CHAT_TEMPLATE)
    special_tokens: tuple[str, ...]
    vocab_size: int
    context_length: int | None


def inspect_model(path: Path, recipe: Recipe, label: str) -> tuple[ModelInfo, Any]:
    """Check the model directory and its tokenizer; return what was learned and the tokenizer
    (with its chat template set). Raises `StageError` naming what is missing and the fix."""
    from transformers import AutoConfig, AutoTokenizer

    kind = recipe.kind
    path = Path(path)
    if not (path / "config.json").is_file():
        raise StageError(
            f"{kind}: input 'model' ({label}) has no config.json at {path}; fix: feed it a Hugging "
            "Face model directory, such as a pretrain step's `model` output"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in path.glob(pattern))
        if pickled:
            raise StageError(
                f"{kind}: input 'model' ({label}) holds its weights only as {pickled[0]} in "
                f"{path}, a pickle, which can run code when loaded; Cairn loads model weights "
                "from safetensors only; fix: where you trust the model's origin, convert it "
                "with AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir) "
                "(transformers writes model.safetensors)"
            )
        raise StageError(
            f"{kind}: input 'model' ({label}) has no weights ({', '.join(WEIGHT_FILES)}) in "
            f"{path}; fix: save the model there with model.save_pretrained(dir)"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise StageError(
            f"{kind}: input 'model' ({label}) has no tokenizer ({' or '.join(TOKENIZER_FILES)}) "
            f"in {path}; fix: save the tokenizer the model was trained with into the same "
            "directory (tokenizer.save_pretrained(dir)); a pretrain step's output has it"
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise StageError(
            f"{kind}: cannot load the model config or tokenizer in {path} ({e}); fix: re-save "
            "them with a current transformers"
        ) from e
    if tok.eos_token is None:
        raise StageError(
            f"{kind}: the tokenizer in {path} has no EOS token, which ends every chat turn; fix: "
            "set tokenizer.eos_token and save it again"
        )
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    own = template is not None
    if template is None:
        missing = [t for t in ROLE_TOKENS.values() if t not in tok.get_vocab()]
        if missing:
            raise StageError(
                f"{kind}: the tokenizer in {path} has no chat template and lacks the role tokens "
                f"{', '.join(missing)}; fix: use a model pretrained on a curate step's tokenizer "
                "(it reserves them), or save a tokenizer with a chat template into the directory"
            )
        template = CHAT_TEMPLATE
    elif recipe.needs_generation_markers:
        from trl.chat_template_utils import has_generation_markers

        if not has_generation_markers(template):
            raise StageError(
                f"{kind}: the chat template of the tokenizer in {path} has no "
                f"{{% generation %}} markers, which {kind} needs to train on assistant tokens "
                "only; fix: wrap each assistant turn's text and end-of-turn token in "
                "{% generation %}...{% endgeneration %}, or remove the template to use Cairn's"
            )
    tok.chat_template = template
    text_config = config.get_text_config()
    vocab_size = int(text_config.vocab_size)
    if len(tok) > vocab_size:
        raise StageError(
            f"{kind}: the tokenizer in {path} has {len(tok)} tokens but the model only "
            f"{vocab_size} embeddings; fix: use the tokenizer the model was trained with"
        )
    context = getattr(text_config, "max_position_embeddings", None)
    info = ModelInfo(
        path=path,
        chat_template=template,
        own_template=own,
        special_tokens=tuple(tok.all_special_tokens),
        vocab_size=vocab_size,
        context_length=int(context) if context else None,
    )
    return info, tok


@dataclass(frozen=True)
class DataStats:
    """Token counts of the data as the chat template lays it out."""

    rows: int
    tokens: int  # all rows (dpo: prompt + chosen and prompt + rejected), before truncation
    truncated: list[str]  # origins of rows longer than max_length (cut at the end)
    dropped: list[str]  # origins of rows with nothing left to train on once cut


def measure(examples: list[Example], tok: Any, recipe: Recipe, max_length: int) -> DataStats:
    """Tokenize every example as the trainer will, to find rows that max_length cuts or empties.

    TRL drops such rows silently (a prompt that alone fills max_length leaves no trained token);
    measuring them here lets the driver say so, and refuse data where nothing would be left.
    """
    tokens, truncated, dropped = 0, [], []
    for ex in examples:
        prompt, lengths = recipe.lengths(ex.fields, tok)
        tokens += sum(lengths)
        if prompt >= max_length:
            dropped.append(ex.origin)
        elif max(lengths) > max_length:
            truncated.append(ex.origin)
    return DataStats(len(examples), tokens, truncated, dropped)


def ids(tok: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
    """The token ids of `messages` as the chat template lays them out."""
    out = tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True
    )
    return list(out["input_ids"])
