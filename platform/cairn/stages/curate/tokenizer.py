"""Training the byte-level BPE tokenizer and turning documents into token ids.

Byte-level (as GPT-2): every byte has a token, so any text encodes without an unknown token and
decodes back exactly. The tokenizer is saved in the Hugging Face layout so the pretrain and serve
stages, and anyone with `transformers`, load it with `AutoTokenizer.from_pretrained` offline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

EOS = "<|endoftext|>"  # ends every document; also serves as BOS, as in GPT-2
PAD = "<|pad|>"
# Chat roles, reserved now so post-training (sft, dpo) can use a chat template whose role markers
# are single tokens, without resizing the embeddings of a pretrained model.
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL = [EOS, PAD, *ROLES]  # in this order: EOS is id 0, PAD id 1, roles ids 2-4
_BATCH = 1024  # documents per encode_batch call: big enough to use every core, small enough to
# check for cancellation often and keep only one batch of Encoding objects alive


def train(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `texts`.

    The result depends only on the texts and their order: the trainer breaks ties between
    equally frequent pairs by token id, and the byte alphabet is fixed, so ids never depend on
    hash order. (Checked by the byte-for-byte test in tests/unit/test_curate.py.)
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a pair seen once is noise, not a unit worth a token
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter(texts), trainer=trainer, length=len(texts))
    return tok


def save(tok: Tokenizer, directory: Path) -> None:
    """Write the tokenizer as a `transformers` fast tokenizer (tokenizer.json + configs)."""
    from transformers import PreTrainedTokenizerFast  # heavy: imported only when saving

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLES,
    )
    fast.save_pretrained(str(directory))


def special_id(tok: Tokenizer, token: str) -> int:
    """The id of one of SPECIAL; they are added by `train`, so a miss is a bug, not bad data."""
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"tokenizer has no {token} token: it was not made by curate.train")
    return token_id


def encode(
    tok: Tokenizer, texts: Sequence[str], check_cancelled: Callable[[], None]
) -> Iterator[np.ndarray]:
    """Each text's token ids followed by EOS, as int32 arrays, in order."""
    eos = special_id(tok, EOS)
    # encode_batch_fast skips computing character offsets, which packing never uses.
    batch_encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    for start in range(0, len(texts), _BATCH):
        check_cancelled()
        for enc in batch_encode(list(texts[start : start + _BATCH]), add_special_tokens=False):
            ids = np.empty(len(enc.ids) + 1, dtype=np.int32)
            ids[:-1] = enc.ids
            ids[-1] = eos
            yield ids
