"""The final report a post-training worker group hands its driver: rank 0 reports a Ray Train
checkpoint named FINAL_CHECKPOINT holding the exported model (MODEL_DIR), with LoRA the adapter
(ADAPTER_DIR), and the run's state (STATE_FILE: step, metric history, summary, LoRA's
parameter counts). The driver copies them into the output artifacts; a re-run finds the report
there and exports it without training again."""

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
STATE_FILE = "state.json"
FINAL_CHECKPOINT = "final"
