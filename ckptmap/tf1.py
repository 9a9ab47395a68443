"""Restore any checkpoint ckptmap reads into a TF1 graph, through a mapping, with TF's own restore.

    import ckptmap.tf1
    report = ckptmap.tf1.restore(sess, "old_run/model.ckpt-360000", "tf1-legacy-names",
                                 rename={"^model_1/": "model_3/"})

Every variable of the graph (or of `scope`, or `var_list`) is restored by `tf.compat.v1.train.Saver`:
straight from the source file when the mapping only renames, else from a temporary checkpoint holding
the mapped tensors. A variable the checkpoint does not cover is never left silently uninitialized:
it is an error, unless `init_missing=True` runs its own initializer, and the report lists it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import api
from .formats import registry
from .restore import (
    LoadReport,
    Source,
    check,
    computed,
    describe,
    notes_of,
    prepare,
    refuse_incomplete,
)
from .rules.plan import Plan
from .tree import Checkpoint

if TYPE_CHECKING:
    from .alignment import Alignment


def restore(
    session: Any,
    source: Source,
    mapping: Any = None,
    *,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    scope: str | None = None,
    var_list: Sequence[Any] | None = None,
    init_missing: bool = False,
) -> LoadReport:
    """Restore the graph's variables (those under `scope`, or `var_list`) from `source`.

    `mapping`: a built-in name, a YAML path, a `ckptmap.Mapping` or a list; None uses the built-in
    mapping from the checkpoint's framework to TF1 (none for TF checkpoints). Raises
    `ckptmap.MappingError`, restoring nothing, when a variable has no value in the checkpoint (unless
    `init_missing=True`, which initializes it with its own initializer) or the shapes disagree.
    Checkpoint tensors no variable takes are listed as unexpected, never an error.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    src, mapped, plan = prepare(source, "tf1", mapping, params, rename)
    with session.graph.as_default():
        variables = _variables(v1, var_list, scope)
        report = LoadReport(_target(session, scope), describe(source), plan.mappings)
        report.notes = notes_of(src, plan)
        provided = {e.name: e for e in mapped.entries.values() if e.kind == "weight" or e.name in variables}
        check(
            report,
            model={n: _shape(v) for n, v in variables.items()},
            provided={n: e.shape for n, e in provided.items()},
        )
        if report.mismatched or (report.missing and not init_missing):
            incomplete = LoadReport(
                report.target,
                report.source,
                report.mappings,
                missing=report.missing,
                mismatched=report.mismatched,
            )
            refuse_incomplete(
                incomplete,
                what="graph variables",
                hint="pass init_missing=True to give them their own initial values",
            )
        wanted = {name: variables[name] for name in variables if name in provided}
        with _checkpoint_for(src, mapped, plan, wanted) as (path, keys):
            v1.train.Saver({keys[name]: var for name, var in wanted.items()}).restore(session, path)
        report.loaded = list(wanted)
        converted = computed(plan)
        report.converted = [n for n in wanted if n in converted]
        if init_missing and report.missing:
            # Each variable's own initializer op: no new op after the session has run (TF warns on those).
            session.run([variables[m.name].initializer for m in report.missing])
            report.initialized = [m.name for m in report.missing]
    return report


class AssignmentMap(NamedTuple):
    """What `tf.compat.v1.train.init_from_checkpoint(*assignment_map(...))` takes."""

    checkpoint: str
    assignment_map: dict[str, str]


def assignment_map(
    source: Source,
    mapping: Any = None,
    *,
    params: MappingABC[str, Any] | None = None,
    rename: MappingABC[str, str] | None = None,
    scope: str | None = None,
    workdir: str | None = None,
) -> AssignmentMap:
    """The checkpoint and name map for Estimator-style `init_from_checkpoint`, through a mapping.

    When the mapping only renames, the source checkpoint itself is used; otherwise the mapped tensors
    are written once to a TF checkpoint in `workdir` (a new temporary directory by default), which
    must outlive the `init_from_checkpoint` call.

    >>> am = ckptmap.tf1.assignment_map("old/", rename={"^a/": "b/"})    # doctest: +SKIP
    >>> tf.compat.v1.train.init_from_checkpoint(*am)                      # doctest: +SKIP
    """
    src, mapped, plan = prepare(source, "tf1", mapping, params, rename)
    names = [e.name for e in mapped.weights() if _under(e.name, scope)]

    def new_dir() -> str:  # made only if a checkpoint must be written
        return workdir or tempfile.mkdtemp(prefix="ckptmap-")

    path, keys = _tf_checkpoint(src, mapped, plan, names, new_dir)
    return AssignmentMap(path, {keys[n]: n for n in names})


@contextlib.contextmanager
def _checkpoint_for(
    src: Checkpoint, mapped: Checkpoint, plan: Plan, names: Iterable[str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """`_tf_checkpoint` for the length of a restore: one it writes is removed afterwards."""
    with contextlib.ExitStack() as stack:

        def temporary() -> str:  # made only if a checkpoint must be written
            return stack.enter_context(tempfile.TemporaryDirectory(prefix="ckptmap-restore-"))

        yield _tf_checkpoint(src, mapped, plan, list(names), temporary)


def _tf_checkpoint(
    src: Checkpoint, mapped: Checkpoint, plan: Plan, names: list[str], directory: Callable[[], str]
) -> tuple[str, dict[str, str]]:
    """A TF checkpoint holding the named tensors, and each name's key in it: the source itself
    when they are only renamed, else one written to `directory()/model.ckpt` (asked for only then)."""
    if src.format in registry.of_library("tensorflow") and _all_plain(plan, names):  # the Saver reads it
        return str(src.path), {n: mapped.entries[n].key for n in names}
    prefix = Path(directory()) / "model.ckpt"
    wanted = Checkpoint([mapped.entries[n] for n in names], format="tf")
    api.save(wanted, prefix, format="tf", sources=src.files)
    return str(prefix), {n: n for n in names}


def _all_plain(plan: Plan, names: Any) -> bool:
    """Whether every named target is a source tensor under a new name (no value computed)."""
    how = {t.name: t.how for t in plan.targets}
    return all(how.get(n) in ("kept", "renamed") for n in names)


def align(
    source: Source,
    *,
    var_list: Sequence[Any] | None = None,
    scope: str | None = None,
    accept_order: bool = False,
) -> Alignment:
    """Draft the mapping that restores `source` into the current graph's variables (or `var_list`,
    under `scope`), checked by running it; `restore(session, source, alignment.mapping())` uses it."""
    import tensorflow as tf

    from .alignment import align as draft
    from .alignment import model_checkpoint

    variables = _variables(tf.compat.v1, var_list, scope)
    tensors = {name: (_shape(v), v.dtype.base_dtype.name) for name, v in variables.items()}
    target = model_checkpoint(tensors, format="tf", label=_target(None, scope))
    return draft(source, target, accept_order=accept_order)


def _variables(v1: Any, var_list: Sequence[Any] | None, scope: str | None) -> dict[str, Any]:
    variables = list(var_list) if var_list is not None else v1.global_variables()
    return {v.op.name: v for v in variables if _under(v.op.name, scope)}


def _under(name: str, scope: str | None) -> bool:
    if not scope:
        return True
    scope = scope.rstrip("/")
    return name == scope or name.startswith(scope + "/")


def _shape(variable: Any) -> tuple[int, ...]:
    return tuple(variable.shape.as_list())


def _target(session: Any, scope: str | None) -> str:
    return f"TF1 graph variables under '{scope}'" if scope else "TF1 graph variables"
