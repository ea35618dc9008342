"""Masked uploads look uniform: a chi-square goodness-of-fit test on one client's masked
vector (zero and constant inputs, several ring widths): 256 high-order bins and the 256 values
of the low byte. Each assertion uses α = 1e-6, so a correct implementation fails a run of this
file with probability ≤ 8e-6 (8 assertions); ``test_detector_has_power`` shows it can fail."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from securefl.secagg import Stage

from .conftest import make_harness

ALPHA = 1e-6


def _masked_uploads(value: int, bits: int, d: int) -> dict[int, np.ndarray]:
    h = make_harness(n=5, t=3, bits=bits, dimension=d)
    h.inputs = {u: np.full(d, value, dtype=h.inputs[1].dtype) for u in h.inputs}
    h.run_to(Stage.MASKED_INPUT)
    out = {}
    for u, req in h.outbox.items():
        out[u] = h.clients[u].handle(req, h.inputs[u]).values  # type: ignore[attr-defined]
    return out


def _chi2_uniform(values: np.ndarray, bins: int, modulus: int) -> float:
    counts = np.bincount(
        (values.astype(np.uint64) * bins // modulus).astype(np.int64), minlength=bins
    )
    return float(stats.chisquare(counts).pvalue)


@pytest.mark.parametrize(("value", "bits"), [(0, 16), (12345, 16), (0, 32), (7, 20)])
def test_one_client_upload_is_uniform(value: int, bits: int) -> None:
    d = 1 << 16
    uploads = _masked_uploads(value, bits, d)
    y = uploads[1]
    assert int(y.max()) < (1 << bits)
    # high-order bins and the low byte (where a biased reduction would show)
    assert _chi2_uniform(y, 256, 1 << bits) > ALPHA
    low = (y.astype(np.uint64) & 0xFF).astype(np.int64)
    assert float(stats.chisquare(np.bincount(low, minlength=256)).pvalue) > ALPHA


def test_detector_has_power() -> None:
    """Sanity check that the test can fail: an unmasked constant vector is far from uniform."""
    y = np.full(1 << 16, 12345, dtype=np.uint32)
    assert _chi2_uniform(y, 256, 1 << 16) < ALPHA
