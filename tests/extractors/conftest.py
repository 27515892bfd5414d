"""Fixtures shared by the extractor tests."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest


@pytest.fixture()
def encode_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Every real Whisper encoder run (the memo wrapper calls the class's method)."""
    import faster_whisper

    calls: list[tuple[int, ...]] = []
    real = faster_whisper.WhisperModel.encode

    def counting(self: Any, features: np.ndarray) -> Any:
        calls.append(tuple(np.shape(features)))
        return real(self, features)

    monkeypatch.setattr(faster_whisper.WhisperModel, "encode", counting)
    return calls
