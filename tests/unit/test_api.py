"""The public surface: `cairn.__all__`, the SDK's and the fakes' exports, and the kind registry.

Every exported name resolves and is documented, the module-level API is fully typed, `import
cairn` stays cheap (no torch, Ray, MLflow, SQLAlchemy or transformers), and the registry refuses
a kind named twice while `cairn.testing.registered` gives a kind for one block only.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

import cairn
import cairn.results
import cairn.stage
import cairn.testing
from cairn import stages
from cairn.stage import ArtifactType, StageConfig, StageSpec, register
from cairn.testing import registered

PLATFORM = str(Path(cairn.__file__).parents[1])
BUILTINS = ["curate", "pretrain", "sft", "dpo", "rlvr", "evaluate", "serve", "release"]
HEAVY = ("torch", "ray", "mlflow", "sqlalchemy", "transformers")


def documented(obj: Any) -> bool:
    """An explicit docstring: not absent, and not the signature a dataclass writes for itself."""
    doc = obj.__doc__ or ""
    if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
        return False
    return bool(doc.strip())


def is_alias(obj: Any) -> bool:
    # `Inputs = dict[str, ...]`, `Launcher = Literal[...]`, `Runtime = Annotated[T, ...]`: type
    # aliases carry the docstring of what they alias (or none); their module documents them.
    return typing.get_origin(obj) is not None


# --- cairn.__all__ ------------------------------------------------------------------------------


def test_all_is_sorted_and_unique() -> None:
    assert cairn.__all__ == sorted(set(cairn.__all__))


@pytest.mark.parametrize("name", cairn.__all__)
def test_every_exported_name_resolves_and_is_documented(name: str) -> None:
    obj = getattr(cairn, name)
    assert documented(obj), f"cairn.{name} has no docstring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Workflw'"):
        cairn.Workflw  # noqa: B018


def test_every_result_type_and_api_function_is_exported() -> None:
    results = {
        n
        for n, obj in vars(cairn.results).items()
        if inspect.isclass(obj) and obj.__module__ == "cairn.results" and not n.startswith("_")
    }
    assert results and results <= set(cairn.__all__)
    functions = {
        n
        for n, obj in vars(cairn).items()
        if inspect.isfunction(obj) and obj.__module__ == "cairn" and not n.startswith("_")
    }
    assert functions == {
        "audit",
        "cancel",
        "connect",
        "lineage",
        "load_workflow",
        "logs",
        "reproduce",
        "resume",
        "run",
        "runs",
        "sign_release",
        "status",
        "submit",
    }
    assert functions <= set(cairn.__all__)


def _hint_names() -> dict[str, Any]:
    """The names the API annotates with but imports only for type checkers."""
    from cairn.engine import Engine
    from cairn.engine.progress import Display
    from cairn.engine.stats import Stats
    from cairn.engine.tokens import Principal
    from cairn.remote import RemoteClient
    from cairn.tracking import Tracker
    from cairn.workflow import Workflow

    return {
        "Display": Display,
        "Engine": Engine,
        "Principal": Principal,
        "RemoteClient": RemoteClient,
        "Stats": Stats,
        "Tracker": Tracker,
        "Workflow": Workflow,
    }


API_FUNCTIONS = [n for n in cairn.__all__ if inspect.isfunction(getattr(cairn, n))]
CLIENT_METHODS = [
    n for n, _ in inspect.getmembers(cairn.Client, inspect.isfunction) if not n.startswith("_")
]


@pytest.mark.parametrize(
    "owner, name", [("cairn", n) for n in API_FUNCTIONS] + [("Client", n) for n in CLIENT_METHODS]
)
def test_the_api_is_fully_annotated(owner: str, name: str) -> None:
    func = getattr(cairn if owner == "cairn" else cairn.Client, name)
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    assert all(p.annotation is not inspect.Parameter.empty for p in params), sig
    assert sig.return_annotation is not inspect.Signature.empty, sig
    module = sys.modules[func.__module__]
    hints = typing.get_type_hints(func, vars(module), _hint_names())  # every one resolves
    assert set(hints) == {p.name for p in params} | {"return"}
    assert documented(func)


def test_the_client_and_the_functions_agree() -> None:
    # Each module-level function is the Client method of the same name, same parameters; the
    # method may add keyword-only ones that only the server passes (who asked: `by`, `owner`).
    for name in API_FUNCTIONS:
        # need no deployment / build the client / runs in a fresh deployment of its own
        if name in ("load_workflow", "connect", "reproduce"):
            continue
        method = inspect.signature(getattr(cairn.Client, name)).parameters
        function = list(inspect.signature(getattr(cairn, name)).parameters)
        extra = [p for p in method if p != "self" and p not in function]
        assert [p for p in method if p != "self" and p not in extra] == function, name
        assert all(method[p].kind is inspect.Parameter.KEYWORD_ONLY for p in extra), name


def test_import_cairn_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import cairn\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": PLATFORM},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


# --- cairn.stage and cairn.testing --------------------------------------------------------------


@pytest.mark.parametrize(
    "module, name",
    [(cairn.stage, n) for n in cairn.stage.__all__]
    + [(cairn.testing, n) for n in cairn.testing.__all__],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_sdk_and_fakes_exports_resolve_and_are_documented(module: Any, name: str) -> None:
    obj = getattr(module, name)
    if not is_alias(obj):
        assert documented(obj), f"{module.__name__}.{name} has no docstring"


def test_sdk_and_fakes_exports_are_sorted_and_unique() -> None:
    for module in (cairn.stage, cairn.testing):
        assert module.__all__ == sorted(set(module.__all__)), module.__name__


# --- the registry --------------------------------------------------------------------------------


def _run(config: StageConfig, inputs: Any, ctx: Any) -> dict:
    return {}


def _spec(kind: str) -> StageSpec:
    return StageSpec(
        kind=kind,
        config_model=StageConfig,
        inputs={},
        outputs={"dataset": ArtifactType.DATASET},
        run=_run,
    )


def test_the_built_ins_come_first_and_each_module_registers_its_own() -> None:
    assert stages.kinds()[: len(BUILTINS)] == BUILTINS
    assert list(stages.BUILTIN) == BUILTINS
    for kind, module in stages.BUILTIN.items():
        spec = stages.get(kind)
        assert spec.kind == kind and spec is importlib.import_module(module).SPEC


def test_a_kind_named_twice_is_refused_naming_both_modules() -> None:
    before = stages.get("pretrain")
    with pytest.raises(ValueError) as err:
        register(_spec("pretrain"))
    message = str(err.value)
    assert "stage kind 'pretrain' is already registered" in message
    assert "by cairn.stages.pretrain)" in message  # the one that has it
    assert f"from {__name__} another name" in message  # the one that asked
    assert stages.get("pretrain") is before  # not replaced


def test_register_takes_only_a_stage_spec() -> None:
    with pytest.raises(TypeError, match="takes a StageSpec, not dict"):
        register({"kind": "x"})  # type: ignore[arg-type]


def test_registered_gives_a_kind_for_one_block_only() -> None:
    spec = _spec("api-test-kind")
    with registered(spec):
        assert stages.get("api-test-kind") is spec
        assert stages.kinds()[-1] == "api-test-kind"
        with pytest.raises(ValueError, match="already registered"):
            register(_spec("api-test-kind"))
    assert "api-test-kind" not in stages.kinds()
    with pytest.raises(KeyError, match="no stage kind 'api-test-kind'"):
        stages.get("api-test-kind")


def test_registered_removes_the_kind_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), registered(_spec("api-test-kind")):
        raise RuntimeError("boom")
    assert "api-test-kind" not in stages.kinds()
