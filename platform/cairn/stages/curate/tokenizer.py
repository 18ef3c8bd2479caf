"""Training the byte-level BPE tokenizer and turning documents into token ids.

Byte-level (as GPT-2): every byte has a token, so any text encodes without an unknown token and
decodes back exactly. The tokenizer is saved in the Hugging Face layout so the pretrain and serve
stages, and anyone with `transformers`, load it with `AutoTokenizer.from_pretrained` offline.
`train_split` is curate's tokenizer phase; the tokenize phase (`tokenize.py`) encodes with
`table_encoder`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from cairn.stage import Context
from cairn.stages.curate import scratch
from cairn.stages.curate.pack import TRAIN

EOS = "<|endoftext|>"  # ends every document; also serves as BOS, as in GPT-2
PAD = "<|pad|>"
# Chat roles, reserved now so post-training (sft, dpo) can use a chat template whose role markers
# are single tokens, without resizing the embeddings of a pretrained model.
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL = [EOS, PAD, *ROLES]  # in this order: EOS is id 0, PAD id 1, roles ids 2-4


def train(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `texts` (see `train_stream`)."""
    return train_stream(iter(texts), len(texts), vocab_size)


def train_stream(texts: Iterator[str], length: int, vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `length` texts read from an iterator.

    The trainer keeps word counts, not texts, so a corpus streamed from disk never sits in memory.

    The result depends only on the texts and their order: the trainer breaks ties between
    equally frequent pairs by token id, and the byte alphabet is fixed, so ids never depend on
    hash order. (Checked by the byte-for-byte test in tests/unit/stages/curate/test_curate.py.)
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
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return tok


def train_split(
    docs_path: Path, documents: int, vocab_size: int, out: Path, ctx: Context
) -> Tokenizer:
    """The tokenizer phase: train on the `documents` train documents of the split's scratch file
    and save the tokenizer to `out`/tokenizer."""
    started = time.monotonic()
    # Trained on the train split only, so validation loss is measured on unseen text.
    tok = train_stream(scratch.texts(docs_path, TRAIN), documents, vocab_size)
    save(tok, out / "tokenizer")
    ctx.log(
        f"trained byte-level BPE tokenizer: vocab {tok.get_vocab_size(with_added_tokens=True)} "
        f"(asked {vocab_size}) on {documents} documents in {time.monotonic() - started:.1f}s"
    )
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


def table_encoder(tok: Tokenizer) -> Callable[[pa.Table], pa.Table]:
    """A Ray Data batch function: the batch's `text` column replaced by `tokens` (EOS-terminated
    int32 lists). It carries the tokenizer as JSON and rebuilds it once per worker process."""
    spec = tok.to_str()
    key = hashlib.sha256(spec.encode()).hexdigest()

    def encode_table(table: pa.Table) -> pa.Table:
        worker_tok = _CACHE.get(key)
        if worker_tok is None:
            worker_tok = _CACHE[key] = Tokenizer.from_str(spec)
        encodings = worker_tok.encode_batch_fast(
            table["text"].to_pylist(), add_special_tokens=False
        )
        eos = special_id(worker_tok, EOS)
        lengths = np.fromiter((len(e.ids) + 1 for e in encodings), np.int32, len(encodings))
        offsets = np.zeros(len(encodings) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.empty(int(offsets[-1]), dtype=np.int32)
        for enc, end in zip(encodings, offsets[1:], strict=True):
            ids = enc.ids
            flat[end - 1 - len(ids) : end - 1] = ids
            flat[end - 1] = eos
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        return table.drop_columns(["text"]).append_column("tokens", tokens)

    return encode_table


_CACHE: dict[str, Tokenizer] = {}  # per worker process: tokenizers rebuilt from JSON, by digest
