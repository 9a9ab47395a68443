"""Shared test setup.

TF1 cells (tf.compat.v1.nn.rnn_cell.*) need tf-keras, selected by TF_USE_LEGACY_KERAS=1 before
TensorFlow is first imported; setting it here, before any test module imports TensorFlow, makes
that true for the whole run.
"""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def _framework_settings_unchanged():
    """Fail the test that leaves torch's serialization settings changed for the tests after it.

    pytest 9.2's monkeypatch undoes `setattr` on torch's config module with `delattr`, which that
    module takes as deleting the option: every later torch.save then raised AttributeError.
    """
    before = _torch_serialization_settings()
    yield
    after = _torch_serialization_settings()
    if before is not None:
        assert after == before, "this test left torch.utils.serialization.config changed"


def _torch_serialization_settings() -> dict[str, object] | None:
    """Each option read the way torch reads it (`config.save.compute_crc32`), or None before a
    test has imported torch: the check must not import it for the others."""
    config = sys.modules.get("torch.utils.serialization.config")
    if config is None:
        return None
    settings = {}
    for key in config.get_config_copy():  # keeps listing an option whose attribute was deleted
        value = config
        try:
            for part in key.split("."):
                value = getattr(value, part)
        except AttributeError as e:
            pytest.fail(f"a test deleted torch's serialization option {key}: {e}")
        settings[key] = value
    return settings
