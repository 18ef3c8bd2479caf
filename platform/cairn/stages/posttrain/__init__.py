"""Post-training stage kinds: `sft` (supervised fine-tuning on chats) and `dpo` (preference tuning).

Both take a `model` (a Hugging Face directory with its tokenizer, e.g. a pretrain step's output)
and `data` (JSONL files), and write a `model` of the same layout: weights, config, generation
config, the tokenizer with its chat template, `training_metrics.jsonl` and `loss.png`.

They share everything but the trainer: `data` reads and checks the rows (every error names file,
line and field, before Ray Train starts), `chat` holds the chat template, `driver` launches a Ray
Train `TorchTrainer` whose workers (`worker`) run TRL's `SFTTrainer` or `DPOTrainer`. The kind
modules (`sft`, `dpo`) hold only their config model and `SPEC`, so importing them stays cheap.
"""
