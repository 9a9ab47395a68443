"""Unpackers: one source tensor that holds many, cut into named parts (`unpack:` in a match rule).

A cuDNN weight buffer (TF1 `tf.contrib.cudnn_rnn`'s `opaque_kernel`) holds every weight and bias
of a network, and how many depends on sizes the buffer does not record: they come from the
mapping's parameters. Each unpacker says, from the source's shape and the parameters, which parts
there are: a name for `{part}` in the rule's `to:` template, where the part starts in the
flattened source, and its shape. Adding one is a function and a row in UNPACKERS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..cells import cudnn_buffer
from ..errors import MappingError

Part = tuple[str, int, tuple[int, ...]]  # name, offset into the flattened source, shape


def cudnn(shape: tuple[int, ...], params: Mapping[str, Any], what: str) -> list[Part]:
    """PyTorch's parameters (`weight_ih_l0`, `bias_hh_l1_reverse`, ...) in cuDNN's buffer."""
    needed = ("kind", "input_size", "units")
    missing = [p for p in needed if not params.get(p)]
    if missing:
        raise MappingError(
            f"{what}: a cuDNN buffer does not record its network's sizes; set {', '.join(missing)} "
            "(--set kind=lstm|gru|rnn --set input_size=N --set units=N, and layers, bidirectional, "
            "proj where they apply)."
        )
    net = cudnn_buffer.CudnnNetwork(
        str(params["kind"]),
        int(params["input_size"]),
        int(params["units"]),
        int(params.get("layers") or 1),
        bool(params.get("bidirectional")),
        int(params.get("proj") or 0),
    )
    cudnn_buffer.check(shape, net, f"{what}: the buffer")
    parts, offset = [], 0
    for name, part_shape in cudnn_buffer.parameters(net):
        parts.append((name, offset, part_shape))
        offset += int(np.prod(part_shape))
    return parts


UNPACKERS: dict[str, Callable[[tuple[int, ...], Mapping[str, Any], str], list[Part]]] = {"cudnn": cudnn}
