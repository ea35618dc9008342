"""The derivation table of ``securefl.secagg.derive`` names every derivation it implements."""

from __future__ import annotations

import inspect

from securefl.crypto import kdf
from securefl.secagg import derive


def _table() -> str:
    doc = derive.__doc__ or ""
    return doc[doc.index("function ") :]


def test_every_derivation_function_is_in_the_table() -> None:
    names = [
        name
        for name, obj in vars(derive).items()
        if inspect.isfunction(obj) and obj.__module__ == derive.__name__
    ]
    assert names
    for name in names:
        assert f"\n{name} " in _table(), f"{name} missing from the derive.py table"


def test_every_round_label_and_prefix_is_in_the_table() -> None:
    table = _table().replace("\n", " ")
    for label in kdf.LABELS - {kdf.LABEL_STOCHASTIC_ROUNDING}:  # encoder option, not the round
        assert f"``{label}``" in table
    for prefix in (derive.SHARE_AD_LABEL, derive.ADVERTISE_LABEL, derive.CONSISTENCY_LABEL):
        stage = prefix.decode().removeprefix("securefl/secagg/v1/").rstrip("\x00")
        assert f"{stage}\\0``" in table
    assert derive.NODE_BINDING_LABEL.startswith(b"securefl/engine/v2/node-binding")
    assert "``securefl/engine/v2/" in table and "node-binding\\0``" in table


def test_stage_prefixes_are_distinct_and_not_prefixes_of_each_other() -> None:
    """Every transcript signed with a client's identity key (advertise, consistency, the
    engine's node binding) starts with its own label, so no signature serves two purposes."""
    prefixes = [
        derive.SHARE_AD_LABEL,
        derive.ADVERTISE_LABEL,
        derive.CONSISTENCY_LABEL,
        derive.NODE_BINDING_LABEL,
    ]
    for a in prefixes:
        for b in prefixes:
            assert a == b or not b.startswith(a)
