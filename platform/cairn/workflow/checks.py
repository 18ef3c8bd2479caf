"""The checks behind `cairn validate`: one pass over a workflow file that collects every problem.

Each problem becomes a `SpecIssue` with the file, the line (from the YAML node positions), the
dotted field, a message and a fix, so the person reading it can edit the file straight away.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cairn import stages
from cairn.errors import SpecIssue
from cairn.stage import ArtifactType, Resources, StageConfig, StageSpec
from cairn.workflow import sources, yamlload
from cairn.workflow.messages import fix, message, short, suggest
from cairn.workflow.model import (
    NAME_RE,
    Ref,
    Step,
    StepModel,
    Workflow,
    WorkflowModel,
    is_external,
    is_uri,
    ref_texts,
)


class Validator:
    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = path
        self.file = str(path)
        self.issues: list[SpecIssue] = []
        self.lines: dict[tuple[Any, ...], int] = {}
        self.broken: set[str] = set()  # steps whose own fields are invalid (already reported)
        self.retyped: dict[int, str] = {}  # keys YAML read as null, a number, a boolean

    # -- helpers ---------------------------------------------------------------------------
    def add(self, loc: tuple[Any, ...], message: str, fix: str) -> None:
        field_name = ".".join(short(x) for x in loc) or "(top level)"
        self.issues.append(SpecIssue(self.file, self.line_of(loc), field_name, message, fix))

    def reported(self, loc: tuple[Any, ...]) -> bool:
        field_name = ".".join(short(x) for x in loc)
        return any(i.field == field_name for i in self.issues)

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None

    def _index_lines(self, node: yaml.Node, loc: tuple[Any, ...]) -> None:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = k.value  # the loader allows only scalar keys
                line = k.start_mark.line + 1
                self.lines[loc + (key,)] = line
                if id(k) in self.retyped:
                    self._retyped_key(loc + (key,), self.retyped[id(k)])
                if key in seen:
                    # YAML silently keeps the last one: a copy-pasted step would vanish unseen.
                    self.add(
                        loc + (key,),
                        f"'{short(key)}' is given twice (lines {seen[key]} and {line})",
                        "rename or remove one of them",
                    )
                seen[key] = line
                self._index_lines(v, loc + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index_lines(item, loc + (i,))

    def _retyped_key(self, loc: tuple[Any, ...], kind: str) -> None:
        name = short(loc[-1])
        quote = f"'{name}':"
        if loc[:-1] == ("steps",):
            self.add(
                loc,
                f"step name {name or '(empty)'} is read by YAML as {kind}, not a name",
                "rename the step, e.g. 'train'"
                + (f", or quote it: {quote}" if re.match(NAME_RE, name) else ""),
            )
        else:
            self.add(
                loc,
                f"key {name or '(empty)'} is read by YAML as {kind}, not a name",
                f"quote it: {quote}" if name else "write a name before the colon",
            )

    def _pydantic(self, err: ValidationError, prefix: tuple[Any, ...], model: type) -> None:
        for e in err.errors():
            loc = prefix + tuple(e["loc"])
            # A union of str | list[str] reports both branches; keep one message per field.
            if self.reported(loc):
                continue
            self.add(loc, message(e), fix(e, model, loc))

    # -- the checks --------------------------------------------------------------------------
    def validate(self) -> Workflow | None:
        try:
            doc = yamlload.compose(self.text)
            self.retyped = doc.retyped
            if doc.node is not None:
                # Bounded: compose refused more than MAX_VALUES values or MAX_DEPTH levels.
                self._index_lines(doc.node, ())
            data = doc.construct()
        except yamlload.Refused as e:
            self.issues.append(SpecIssue(self.file, e.line, e.field, e.message, e.fix))
            return None
        if not isinstance(data, dict):
            self.add(
                (),
                "a workflow must be a mapping with name and steps",
                "start the file with `name: my-workflow` and a `steps:` mapping",
            )
            return None
        wf: WorkflowModel | None = None
        try:
            wf = WorkflowModel.model_validate(data)
            step_models = wf.steps
        except ValidationError as e:
            self._pydantic(e, (), WorkflowModel)
            step_models = self._parse_steps(data.get("steps"))

        steps: dict[str, Step] = {}
        for name, sm in step_models.items():
            step = self._step(name, sm, step_models)
            if step is not None:
                steps[name] = step
        ordered = self._toposort(step_models)
        if self.issues or ordered is None or wf is None:
            return None
        return Workflow(
            name=wf.name,
            version=str(wf.version),
            description=wf.description,
            path=self.path.resolve(),
            text=self.text,
            steps={n: steps[n] for n in ordered},
            digest=hashlib.sha256(self.text.encode()).hexdigest(),
        )

    def _parse_steps(self, raw: Any) -> dict[str, StepModel]:
        """The steps that parse when the file as a whole did not (its errors are already
        reported), so that one pass still checks their kinds, configs and references."""
        if not isinstance(raw, dict):
            return {}
        out: dict[str, StepModel] = {}
        for name, body in raw.items():
            try:
                out[str(name)] = StepModel.model_validate(body)
            except ValidationError:
                self.broken.add(str(name))
        return out

    def _step(self, name: str, sm: StepModel, all_steps: dict[str, StepModel]) -> Step | None:
        loc: tuple[Any, ...] = ("steps", name)
        ok = True
        if not re.match(NAME_RE, name):
            ok = False
            if not self.reported(loc):  # e.g. `1:` was reported as read by YAML as a number
                self.add(
                    loc,
                    f"step name '{short(name)}' is not allowed",
                    "use lowercase letters, digits, '-' or '_', starting with a letter",
                )
        known = stages.kinds()
        if sm.kind not in known:
            self.add(
                loc + ("kind",),
                f"unknown stage kind '{short(sm.kind)}'",
                suggest(sm.kind, known, "use one of: " + ", ".join(known)),
            )
            return None
        spec = stages.get(sm.kind)

        config: StageConfig | None = None
        try:
            config = spec.config_model.model_validate(sm.config)
        except ValidationError as e:
            self._pydantic(e, loc + ("config",), spec.config_model)
            ok = False

        resources: Resources | None = None
        merged = spec.default_resources.model_dump() | sm.resources
        try:
            resources = Resources.model_validate(merged)
        except ValidationError as e:
            self._pydantic(e, loc + ("resources",), Resources)
            ok = False
        if resources is not None and resources.elastic and not spec.elastic:
            elastic = ", ".join(k for k in stages.kinds() if stages.get(k).elastic)
            self.add(
                loc + ("resources", "num_workers"),
                f"a range ({resources.workers_text()}) is for stages that can grow their worker "
                f"group while training ({elastic}); '{sm.kind}' runs a fixed number of workers",
                f"give a whole number, e.g. num_workers: {resources.num_workers}",
            )
            ok = False
        if resources is not None and resources.gpus_per_worker > 0 and not spec.uses_gpus:
            self.add(
                loc + ("resources", "gpus_per_worker"),
                f"'{sm.kind}' runs on CPUs only: a GPU would never be used (on a cluster "
                "without GPUs the step could not be placed at all)",
                "remove gpus_per_worker (give the GPUs to the training steps)",
            )
            ok = False

        inputs = self._inputs(name, sm, spec, all_steps)
        if inputs is None or not ok or config is None or resources is None:
            return None
        if spec.check_inputs is not None:
            files = {
                slot: [Path(r.uri) for r in refs if r.uri and not is_uri(r.uri)]
                for slot, refs in inputs.items()
            }
            found = spec.check_inputs(config, files)
            if found:
                self.issues.extend(found)
                return None
        return Step(
            name, sm.kind, spec, config, inputs, resources, sm.retries, sm.cache, self.line_of(loc)
        )

    def _inputs(
        self, name: str, sm: StepModel, spec: StageSpec, all_steps: dict[str, StepModel]
    ) -> dict[str, list[Ref]] | None:
        loc: tuple[Any, ...] = ("steps", name, "inputs")
        out: dict[str, list[Ref]] = {}
        ok = True
        for slot_name, raw in sm.inputs.items():
            slot = spec.inputs.get(slot_name)
            if slot is None:
                self.add(
                    loc + (slot_name,),
                    f"kind '{spec.kind}' has no input '{short(slot_name)}'",
                    suggest(
                        slot_name,
                        list(spec.inputs),
                        f"its inputs are: {', '.join(spec.inputs) or '(none)'}",
                    ),
                )
                ok = False
                continue
            refs = raw if isinstance(raw, list) else [raw]
            if isinstance(raw, list) and not slot.many:
                self.add(
                    loc + (slot_name,),
                    f"input '{short(slot_name)}' takes one reference, got a list",
                    "give a single `step.output` or path",
                )
                ok = False
                continue
            if not refs:
                self.add(loc + (slot_name,), "empty list", "give at least one reference")
                ok = False
                continue
            resolved = []
            for i, item in enumerate(refs):
                rloc = loc + ((slot_name, i) if isinstance(raw, list) else (slot_name,))
                ref = self._item(item, name, slot.type, rloc, all_steps)
                ok = ok and ref is not None
                if ref is not None:
                    resolved.append(ref)
            out[slot_name] = resolved
        for slot_name, slot in spec.inputs.items():
            if slot_name not in sm.inputs and not slot.optional:
                self.add(
                    loc,
                    f"missing input '{slot_name}' ({slot.type.value})",
                    f"add `{slot_name}: <step>.<output>` or a path under `inputs:`",
                )
                ok = False
        return out if ok else None

    def _ref(
        self,
        text: str,
        step: str,
        want: ArtifactType,
        loc: tuple[Any, ...],
        all_steps: dict[str, StepModel],
    ) -> Ref | None:
        if is_external(text):
            return self._external(text, want, loc)
        m = re.fullmatch(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)", text)
        if not m:
            self.add(
                loc,
                f"'{short(text)}' is neither `step.output` nor a path",
                "write `<step>.<output>`, or a path starting with ./ or / for a file",
            )
            return None
        src, output = m.groups()
        if src == step:
            self.add(
                loc,
                f"step '{short(step)}' takes its own output as input",
                "reference an earlier step instead",
            )
            return None
        if src in self.broken:
            return None  # reported on that step already
        if src not in all_steps:
            hint = suggest(src, list(all_steps), f"steps are: {', '.join(all_steps)}")
            self.add(
                loc,
                f"unknown step '{short(src)}' in '{short(text)}'",
                f"{hint}; if you meant a file, write ./{short(text)}",
            )
            return None
        kind = all_steps[src].kind
        if kind not in stages.kinds():
            return None  # reported on that step already
        spec = stages.get(kind)
        outputs = spec.outputs
        if output not in outputs:
            self.add(
                loc,
                f"step '{short(src)}' ({kind}) has no output '{short(output)}'",
                suggest(output, list(outputs), f"its outputs are: {', '.join(outputs)}"),
            )
            return None
        setting = spec.optional_outputs.get(output)
        if setting is not None:
            try:
                made = spec.outputs_for(spec.config_model.model_validate(all_steps[src].config))
            except ValidationError:
                made = outputs  # its config is reported on that step
            if output not in made:
                self.add(
                    loc,
                    f"step '{short(src)}' ({kind}) makes '{output}' only with `{setting}` set in "
                    f"its config, and it has no `{setting}`",
                    f"add {setting}: to step {short(src)} (under its config:, e.g. "
                    f"`{setting}: {{}}` for the defaults), or reference another output",
                )
                return None
        have = outputs[output]
        if have != want:
            self.add(
                loc,
                f"'{short(text)}' is a {have.value}, but this input needs a {want.value}",
                "give a path to the raw data files (no step makes raw data)"
                if want == ArtifactType.RAW
                else f"feed it the output of a step that makes a {want.value}",
            )
            return None
        return Ref(text=text, step=src, output=output)

    def _item(
        self,
        item: Any,
        step: str,
        want: ArtifactType,
        loc: tuple[Any, ...],
        all_steps: dict[str, StepModel],
    ) -> Ref | None:
        """One input as written (a reference, or a source with its licence), resolved."""
        entry = sources.written(item)
        if isinstance(entry, list):
            for key, problem in entry:
                self.add(loc + key, problem.message, problem.fix)
            return None
        ref = self._ref(entry[0], step, want, loc, all_steps)
        if ref is None or not isinstance(item, dict):
            return ref
        if not ref.external:
            self.add(
                loc,
                f"'{short(ref.text)}' is an earlier step's output: `source:`/`license:` are for "
                "external data (a step's output has its own lineage back to its sources)",
                f"write `{short(ref.text)}` on its own, and state the licence on the external "
                "source it was made from",
            )
            return None
        return dataclasses.replace(ref, license=entry[1])

    def _external(self, text: str, want: ArtifactType, loc: tuple[Any, ...]) -> Ref | None:
        found = sources.resolve(text, want, self.path.parent)
        if isinstance(found, sources.Problem):
            self.add(loc, found.message, found.fix)
            return None
        return found

    def _toposort(self, steps: dict[str, StepModel]) -> list[str] | None:
        deps: dict[str, set[str]] = {}
        for name, sm in steps.items():
            refs: list[str] = []
            for raw in sm.inputs.values():
                refs.extend(ref_texts(raw))
            deps[name] = {
                r.split(".", 1)[0]
                for r in refs
                if not is_external(r) and r.split(".", 1)[0] in steps and r.split(".", 1)[0] != name
            }
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(n: str, trail: list[str]) -> bool:
            if state.get(n) == 2:
                return True
            if state.get(n) == 1:
                cycle = trail[trail.index(n) :] + [n]
                self.add(
                    ("steps", n, "inputs"),
                    "cycle: " + " → ".join(cycle),
                    "a step can only take outputs of steps that do not depend on it",
                )
                return False
            state[n] = 1
            for d in sorted(deps[n]):
                if not visit(d, trail + [n]):
                    return False
            state[n] = 2
            order.append(n)
            return True

        for n in steps:
            if not visit(n, []):
                return None
        return order
