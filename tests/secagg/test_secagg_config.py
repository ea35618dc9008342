"""SecAggConfig validates every parameter and names the one that is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from securefl.crypto import keys
from securefl.errors import ConfigurationError
from securefl.secagg import SecAggConfig

MODEL = b"\x01" * 32  # a malicious-server round (the default) binds a model hash
KEYS = {u: keys.ed25519_public_bytes(keys.generate_ed25519()) for u in range(1, 6)}


def _make(**kw: Any) -> SecAggConfig:
    base: dict[str, Any] = {"threshold": 3, "bits": 16, "dimension": 4, "model_digest": MODEL}
    base.update(kw)
    ids = base.pop("ids", KEYS)
    return SecAggConfig.create(ids, **base)


@pytest.mark.parametrize(
    ("kw", "parameter"),
    [
        ({"threshold": 1}, "threshold"),
        ({"threshold": 5}, "threshold"),  # only 4 neighbours
        ({"threshold": 3, "degree": 2}, "threshold"),
        ({"bits": 0}, "bits"),
        ({"bits": 65}, "bits"),
        ({"dimension": 0}, "dimension"),
        ({"dimension": 2**27 + 1}, "dimension"),
        ({"min_cohort": 6}, "min_cohort"),
        ({"round_index": 2**32}, "round_index"),
        ({"model_digest": b"short"}, "model_digest"),
        ({"layout_digest": bytes(33)}, "layout_digest"),
        ({"nonce": bytes(65)}, "nonce"),
        ({"degree": 1}, "degree"),
        ({"ids": {0: KEYS[1], 1: KEYS[2], 2: KEYS[3]}}, "client_ids"),
        ({"ids": {1: KEYS[1], 2: KEYS[2], 3: b"\x00" * 31}}, "identity_keys"),
    ],
)
def test_invalid_parameters_named(kw: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _make(**kw)
    assert info.value.parameter == parameter


def test_effective_values() -> None:
    cfg = _make(degree=3, threshold=2, threat_model="semi-honest")
    assert cfg.neighbour_count == 4 and cfg.is_complete  # 3 → 4 = n − 1: complete
    big = SecAggConfig.create(
        {u: KEYS[1 + u % 5] for u in range(1, 21)},
        threshold=3,
        bits=16,
        dimension=4,
        degree=5,
        threat_model="semi-honest",
    )
    assert big.neighbour_count == 6 and not big.is_complete
    assert _make(min_cohort=4).effective_min_cohort == 4
    assert _make(min_cohort=0).effective_min_cohort == 3
    assert _make(bits=32).word_bytes == 4 and _make(bits=33).word_bytes == 8
