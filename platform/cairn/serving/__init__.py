"""Serving a model behind an OpenAI-compatible API, with vLLM or Cairn's transformers engine.

Used by the `serve` stage (start, smoke-test, record the endpoint, stop unless kept) and by the
`cairn serve` command (`serve_forever`). The modules:

- `engines`: which engine runs here ("auto": vLLM if an importable build can run, else
  transformers) and the command line that starts it;
- `process`: a server as an OS process in its own session: launch, health check, stop, log tail;
- `server`: `start_server` / `Server` / `stop_endpoint` / `endpoint_problem` (is a recorded
  server still serving its model here?), built on the two above;
- `hf_engine`, `hf_server`, `openai_api`: the transformers engine (decoding loop; FastAPI
  app; the API's request, response, error and stream shapes);
- `chat`: the fallback chat template both engines use when a tokenizer has none;
- `smoke`: the requests the serve stage sends through the `openai` client;
- `foreground`: `serve_forever`, for the CLI.

Importing this package is cheap: torch, transformers, vllm and openai load only where used.
"""

from __future__ import annotations

from cairn.serving.engines import EngineChoice, ServingError, choose_engine
from cairn.serving.foreground import serve_forever
from cairn.serving.server import Server, endpoint_problem, start_server, stop_endpoint

__all__ = [
    "EngineChoice",
    "Server",
    "ServingError",
    "choose_engine",
    "endpoint_problem",
    "serve_forever",
    "start_server",
    "stop_endpoint",
]
