"""How much a mapping may add to a checkpoint (`ops.GROWTH_BYTES`): a cast to a wider dtype makes
no new elements and is never growth, whatever the checkpoint's size; `cat` of a source with itself
and `zeros` make new ones and are held to the allowance. Sources here are declared, never read:
planning works from shapes, so a checkpoint of gigabytes costs nothing."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from ckptmap import dtypes
from ckptmap.errors import MappingError
from ckptmap.rules import ops
from ckptmap.rules.mapping import Mapping
from ckptmap.rules.schema import parse
from ckptmap.tree import Checkpoint, TensorEntry


def _unread() -> np.ndarray:
    raise AssertionError("planning read a source")


def _plan(expr: str, elements: int, dtype: str) -> Checkpoint:
    """The planned output of the mapping `w -> expr` over one source of `elements` of `dtype`."""
    ckpt = Checkpoint([TensorEntry("w", (elements,), dtype, "w", _unread)], format="test")
    text = textwrap.dedent(f"""
        rules:
          - match: w
            to: {{w: "{expr}"}}
    """)
    out, _ = Mapping(parse(text, "m.yaml"), {}).run(ckpt)
    return out


@pytest.mark.parametrize(
    ("dtype", "elements"),
    [
        ("float16", 590_000_000),  # 1.1 GiB, 2.2 GiB as float32: 1.1 GiB more bytes
        ("bfloat16", 590_000_000),
        ("int8", 350 << 20),  # 350 MiB, 1.4 GiB as float32
    ],
)
def test_a_cast_to_a_wider_dtype_of_a_big_checkpoint_is_planned(dtype: str, elements: int) -> None:
    assert elements * (4 - dtypes.by_name(dtype).itemsize) > ops.GROWTH_BYTES  # refused when counted in bytes
    out = _plan("src | cast('float32')", elements, dtype)
    entry = out.entries["w"]
    assert (entry.shape, entry.dtype) == ((elements,), "float32")


def test_a_cat_of_a_big_source_with_itself_is_still_refused() -> None:
    with pytest.raises(MappingError, match="bytes"):
        _plan("cat(src, src)", 590_000_000, "float16")  # 1.1 GiB of new float16 elements


def test_casting_first_does_not_let_a_cat_grow_past_the_allowance() -> None:
    # 300M new elements at float32's 4 bytes: 1.2 GB, though the source is only 600 MB.
    with pytest.raises(MappingError, match="bytes"):
        _plan("cat(src | cast('float32'), src | cast('float32'))", 300_000_000, "float16")


def test_zeros_are_growth_at_their_own_itemsize() -> None:
    with pytest.raises(MappingError, match="bytes"):
        _plan("cat(src, zeros([300000000], 'float32'))", 8, "float32")
    out = _plan("cat(src, zeros([1000], 'float64'))", 8, "float64")
    assert out.entries["w"].shape == (1008,)
