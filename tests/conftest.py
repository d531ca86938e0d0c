from __future__ import annotations

import numpy as np
import pytest

from polywake.data.splits import have_shared_data


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def speechlike(rng: np.random.Generator) -> np.ndarray:
    """3 s of a voiced-like signal: harmonics with a wandering pitch, amplitude bursts, noise."""
    t = np.arange(3 * 16000) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    return (0.2 * env * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


requires_shared_data = pytest.mark.skipif(
    not have_shared_data(), reason="../shared/data is absent (only on the project's machines)"
)
