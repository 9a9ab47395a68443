"""ONNX models made for tests with the onnx package: the templates ONNX output is written into."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def initializers_model(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A model with no nodes whose initializers are `arrays` (by initializer name), saved at `path`."""
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [], "weights", [], [], [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def writer_options(fmt, folder: Path, names: dict[str, tuple[tuple[int, ...], str]]) -> dict:
    """What `fmt`'s writer needs beyond the checkpoint: for a format written into an existing file
    (its row's `template`), a template holding `names` (canonical name -> shape, dtype)."""
    if not fmt.template:
        return {}
    arrays = {n.replace("/", "."): np.zeros(shape, dtype) for n, (shape, dtype) in names.items()}
    return {"template": initializers_model(folder / f"template.{fmt.example}", arrays)}
