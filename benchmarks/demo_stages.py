"""Running a demo's run list (``demo.json``'s ``run``) with every training stage under a time cap.

A demo's run list trains (``$@train#trainer.run()``), may start further training stages itself
(``monai_effseg.training.train_stage``, the one launcher of a later stage of every staged bundle: each a training
workflow of its own) and ends with the hold-out evaluation. :func:`run_demo_list` evaluates the items one by one, as
``ConfigWorkflow.run`` does, but builds each stage helper's workflow here (``configs`` with ``stage`` set, its keyword
arguments as literals, trainer only: what the helpers do), so that every stage's trainer and evaluator get the
``training_clock.CappedStages`` handlers; nothing of ignite or of the package is swapped out.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from monai.bundle.utils import ID_SEP_KEY
from training_clock import CappedStages

CALL = re.compile(r"\$\s*(?P<fn>[A-Za-z_][\w.]*)\((?P<args>.*)\)\s*$", re.S)
OWN_TRAINER = "$@train#trainer.run()"


def resolve(dotted: str) -> Any:
    """The object a config expression names, e.g. ``monai_effseg.training.train_stage``."""
    parts = dotted.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot resolve {dotted}")


def call_arguments(parser: Any, args: str) -> tuple[tuple, dict]:
    """The arguments of a run-list call, evaluated as the config's parser does (``@id``: the parsed content)."""
    refs: dict[str, Any] = {}

    def ref(m: re.Match) -> str:
        refs[m[1]] = parser.get_parsed_content(m[1])
        return f"__refs[{m[1]!r}]"

    code = re.sub(r"@(\w+(?:(?:#|::)\w+)*)", ref, args)
    return eval(f"__call({code})", {"__refs": refs, "__call": lambda *a, **k: (a, k)})  # noqa: S307 - bundle config


def train_workflow_stage(workflow: Any, item_id: str, stages: CappedStages) -> None:
    """Run the run-list item ``item_id`` (the workflow's ``trainer.run()``) as one capped stage of ``stages``."""
    parser = workflow.parser
    stages.attach(parser.get_parsed_content("train#trainer"), parser.get_parsed_content("validate#evaluator"))
    try:
        parser.get_parsed_content(item_id)
        parser.ref_resolver.remove_resolved_content(item_id)
    finally:
        stages.finish()


def train_helper_stage(call: inspect.BoundArguments, stages: CappedStages, train_overrides: dict) -> None:
    """A stage helper call of the run list (``monai_effseg.training.train_stage``: ``configs`` with ``stage``
    set, its keyword arguments as literals, trainer only), built here so that its trainer is capped too; the demo's
    training overrides apply to it as they do to stage 1."""
    from monai_effseg.training import TRAIN_ONLY
    from monai_effseg.workflows import bundle_workflow

    var_kw = [k for k, p in call.signature.parameters.items() if p.kind == inspect.Parameter.VAR_KEYWORD]
    literals = {**(call.arguments[var_kw[0]] if var_kw else {}), "stage": call.arguments["stage"]}
    extra = {k: v for k, v in train_overrides.items() if k not in literals}
    workflow = bundle_workflow(call.arguments["bundle_root"], list(call.arguments["configs"]), "train",
                               literals=literals, run=TRAIN_ONLY, **extra)  # fmt: skip
    workflow.initialize()
    try:
        train_workflow_stage(workflow, f"{workflow.run_id}{ID_SEP_KEY}0", stages)
    finally:
        workflow.finalize()


def is_own_trainer(item: Any) -> bool:
    """Whether a run-list item is the workflow's ``trainer.run()`` (the parser stores ids with ``::``)."""
    return isinstance(item, str) and item.replace(" ", "").replace("::", "#") == OWN_TRAINER


def list_call(parser: Any, item: Any) -> Optional[tuple[Callable, inspect.BoundArguments]]:
    """A run-list item ``$module.function(...)``: the function and its bound, evaluated arguments; else ``None``."""
    m = CALL.match(item) if isinstance(item, str) else None
    if m is None:
        return None
    fn = resolve(m["fn"])
    args, kwargs = call_arguments(parser, m["args"])
    call = inspect.signature(fn).bind(*args, **kwargs)
    call.apply_defaults()
    return fn, call


def run_demo_list(
    workflow: Any, stages: CappedStages, train_overrides: dict, infer_literals: dict, times: dict
) -> None:
    """The demo's run list item by item, as ``ConfigWorkflow.run`` evaluates it, except that every training stage
    (the workflow's own trainer, each stage helper call) runs under ``stages``, and a call taking ``overrides`` (the
    hold-out evaluation) gets ``infer_literals`` in them. ``times["holdout_s"]`` adds up the other items."""
    parser = workflow.parser
    sys.path.insert(1, str(Path(workflow.config_root_path).parent))  # as ConfigWorkflow.run does
    for i, item in enumerate(parser[workflow.run_id]):
        item_id = f"{workflow.run_id}{ID_SEP_KEY}{i}"
        if is_own_trainer(item):
            train_workflow_stage(workflow, item_id, stages)
            continue
        fn, call = list_call(parser, item) or (None, None)
        if call is not None and {"bundle_root", "configs", "stage"} <= set(call.signature.parameters):
            train_helper_stage(call, stages, train_overrides)
            continue
        start = time.perf_counter()
        try:
            if call is not None and "overrides" in call.signature.parameters:
                call.arguments["overrides"] = {**(call.arguments["overrides"] or {}), **infer_literals}
                fn(*call.args, **call.kwargs)
            else:
                parser.get_parsed_content(item_id)
                parser.ref_resolver.remove_resolved_content(item_id)
        finally:
            times["holdout_s"] += time.perf_counter() - start
    if not stages.stages:
        raise RuntimeError(f"no training stage found in the run list {parser[workflow.run_id]}")
