"""Fresh Flax cells inside `nn.RNN` (linen) or `nnx.RNN`, run by JAX on the CPU.

The parameters come from Flax's own loaders (`flax.serialization.msgpack_restore` of the file, or
orbax's `PyTreeCheckpointer().restore` of the directory), looked up by each tensor's path, not from
ckptmap's readers. A Bidirectional's backward half runs as
`nn.Bidirectional` runs it: `reverse=True, keep_order=True` (flax/linen/recurrent.py).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ..cells import flax_cells
from ..cells.model import RNN
from ..formats.flax_msgpack import unescape
from ..tree import Checkpoint
from .backends import backend, import_framework
from .cases import Batch, Run
from .outcome import Outcome, framework_message


def restore_and_run(
    rnn: RNN, ckpt: Checkpoint, batches: list[Batch], *, by: str, options: dict[str, Any]
) -> Outcome:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import_framework("jax", backend("flax").install)
    flax = import_framework("flax", backend("flax").install)
    names = [name for cell in rnn.cells for name in cell.members.values()]
    outcome = Outcome("flax", names)
    cls = flax_cells.cell_class(rnn.class_name)
    try:
        tree = _restore(flax, ckpt)
        halves = []
        for cell in rnn.cells:
            params: dict[str, dict[str, np.ndarray]] = {}
            for role, path in cls.roles().items():
                dense, leaf = path.split("/")
                params.setdefault(dense, {})[leaf] = _lookup(tree, cell.members[role])
            halves.append((cell.reverse, _runner(cls, rnn, params)))
    except Exception as e:  # flax refused the file, or the tree lacks a tensor
        outcome.error = framework_message(e)
        return outcome
    for batch in batches:
        outputs, states = [], {}
        for reverse, run in halves:
            carry, y = run(batch.x, batch.states[(0, reverse)], reverse)
            outputs.append(np.asarray(y))
            states[(0, reverse)] = carry
        outcome.runs.append(Run(np.concatenate(outputs, axis=-1), states))
    return outcome


def _restore(flax: Any, ckpt: Checkpoint) -> Any:
    """The whole tree, as Flax's msgpack reader or orbax's checkpointer gives it."""
    assert ckpt.path is not None
    if ckpt.format == "orbax":
        import orbax.checkpoint as ocp

        with warnings.catch_warnings():  # "Sharding info not provided": one CPU, nothing to shard
            warnings.simplefilter("ignore")
            return ocp.PyTreeCheckpointer().restore(ckpt.path.resolve())
    return flax.serialization.msgpack_restore(ckpt.path.read_bytes())


def _lookup(tree: Any, name: str) -> np.ndarray:
    node = tree
    for part in name.split("/"):
        node = node[unescape(part)]
    return np.asarray(node)


def _runner(cls: flax_cells.FlaxCell, rnn: RNN, params: dict[str, Any]) -> Any:
    """A function (x, initial state, reverse) -> (final state, outputs) over one direction."""
    import jax.numpy as jnp

    if cls.name.startswith("nnx."):
        from flax import nnx

        cell = getattr(nnx, cls.name.removeprefix("nnx."))(rnn.input_size, rnn.units, rngs=nnx.Rngs(0))
        state = nnx.state(cell, nnx.Param)
        nnx.replace_by_pure_dict(state, params)
        nnx.update(cell, state)
        layer = nnx.RNN(cell)

        def apply(x: Any, carry: Any, reverse: bool) -> Any:
            return layer(x, initial_carry=carry, return_carry=True, reverse=reverse, keep_order=True)

    else:
        from flax import linen as nn

        linen_layer = nn.RNN(getattr(nn, cls.name)(rnn.units))
        variables = {"params": {"cell": params}}

        def apply(x: Any, carry: Any, reverse: bool) -> Any:
            return linen_layer.apply(
                variables, x, initial_carry=carry, return_carry=True, reverse=reverse, keep_order=True
            )

    def run(x: np.ndarray, state: dict[str, np.ndarray], reverse: bool) -> tuple[dict[str, np.ndarray], Any]:
        carry = (
            (jnp.asarray(state["c"]), jnp.asarray(state["h"])) if "c" in state else jnp.asarray(state["h"])
        )
        final, y = apply(jnp.asarray(x), carry, reverse)
        if "c" in state:
            c, h = final
            return {"h": np.asarray(h), "c": np.asarray(c)}, y
        return {"h": np.asarray(final)}, y

    return run
