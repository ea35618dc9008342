"""decrypt(Σ encryptions) equals the plain sum within the stated bound; roles; weights."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.errors import ConfigurationError
from securefl.he import (
    HEClient,
    HEServer,
    KeyHolder,
    SecretKeyExposureError,
    _ops,
    get_preset,
    raw_error_bound,
    released_error_bound,
)
from securefl.he.context import load_public_context, pack_context, unpack_context
from securefl.he.params import weight_sums


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[list[dict[str, np.ndarray]], str, list[float], str]:
    """1–50 clients, 1–3 named tensors of random shapes (one layout), values of any magnitude,
    unit / client-side / (on `weighted`) server-side weights."""
    n_clients = draw(st.integers(1, 50))
    n_tensors = draw(st.integers(1, 3))
    shapes = [
        tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))) for _ in range(n_tensors)
    ]
    magnitude = draw(st.sampled_from([1e-4, 1.0, 100.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)  # test data only, not key material
    cohort = [
        {f"layer{k}.w": rng.uniform(-magnitude, magnitude, size=s) for k, s in enumerate(shapes)}
        for _ in range(n_clients)
    ]
    name = draw(st.sampled_from(["fast", "weighted", "precise"]))
    modes = ["none", "client"] + (["server"] if name == "weighted" else [])
    mode = draw(st.sampled_from(modes))
    weights = [1.0] * n_clients
    if mode != "none":
        weights = draw(st.lists(st.floats(0.0, 2.0), min_size=n_clients, max_size=n_clients))
    return cohort, name, weights, mode


def _max_err(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
    return max(float(np.max(np.abs(got[k] - want[k]))) for k in want)


@settings(max_examples=20)
@given(cohorts())
def test_sum_within_stated_bound(holders: dict[str, KeyHolder], case: tuple) -> None:
    cohort, name, weights, mode = case
    kh = holders[name]
    client = HEClient(kh.public_context_bytes(), workers=1)
    server = HEServer(kh.server_context_bytes())
    if mode == "server":
        uploads = [client.encrypt(x) for x in cohort]
        aggregate = server.aggregate(uploads, weights=weights)
    else:
        uploads = [client.encrypt(x, weight=w) for x, w in zip(cohort, weights, strict=True)]
        aggregate = server.aggregate(uploads)
    result = kh.decrypt_result(aggregate)
    want = {k: sum(w * x[k] for x, w in zip(cohort, weights, strict=True)) for k in cohort[0]}
    magnitude = max(float(np.max(np.abs(v))) for v in want.values())
    # rounding is sized from the key holder's configuration, not from the cohort (issue 12 #4)
    cap, w_max = kh.max_contributions, kh.max_server_weight
    sums = (cap * w_max, cap * w_max**2) if mode == "server" else None
    stated = released_error_bound(
        get_preset(name), cap, server_weight_sums=sums, max_abs=magnitude + 1.0
    )
    assert result.metadata["released_error_bound"] == pytest.approx(stated, rel=1e-6)
    assert weight_sums(weights)[0] <= cap * w_max
    assert _max_err(result.tensors, want) <= stated
    assert result.metadata["contributions"] == len(cohort)
    expected_mode = mode if mode == "server" or any(w != 1.0 for w in weights) else "none"
    assert result.metadata["weighting"] == expected_mode


@pytest.mark.parametrize("name", ["fast", "weighted", "precise"])
def test_raw_error_within_bound_50_clients(holders: dict[str, KeyHolder], name: str) -> None:
    """The raw decryption error (before release rounding) respects the derived bound."""
    kh = holders[name]
    client = HEClient(kh.public_context_bytes(), workers=1)
    server = HEServer(kh.server_context_bytes())
    rng = np.random.default_rng(7)
    cohort = [{"w": rng.uniform(-1, 1, size=2 * 4096)} for _ in range(50)]
    aggregate = server.aggregate([client.encrypt(x) for x in cohort])
    from securefl.he import wire

    env = wire.unpack(
        aggregate,
        kind=wire.KIND_AGGREGATE,
        preset_name=name,
        context_fingerprint=kh.fingerprint,
        slot_count=kh.preset.slot_count,
        max_chunk_bytes=kh.info.max_chunk_bytes(kh.preset.download_level),
        max_bytes=2**30,
    )
    level = kh.preset.download_level
    spec = _ops.ChunkSpec(level, kh.info.parms_ids[level], kh.preset.scale)
    raw = _ops.decrypt_range(kh._ctx, env.chunks, spec, 0)
    want = sum(x["w"] for x in cohort)
    err = float(np.max(np.abs(raw - want)))
    bound = raw_error_bound(kh.preset, 50, max_abs=float(np.max(np.abs(want))))
    assert err <= bound
    # the bound is conservative, but not absurdly so (it would then state nothing useful)
    assert err >= bound / 1000


def test_client_weights(holders: dict[str, KeyHolder]) -> None:
    kh = holders["fast"]
    client = HEClient(kh.public_context_bytes(), workers=1)
    server = HEServer(kh.server_context_bytes())
    rng = np.random.default_rng(3)
    xs = [{"a": rng.normal(size=(30, 7))} for _ in range(4)]
    weights = [0.5, 2.0, 0.0, 1.0]
    agg = server.aggregate([client.encrypt(x, weight=w) for x, w in zip(xs, weights, strict=True)])
    result = kh.decrypt_result(agg)
    want = {"a": sum(w * x["a"] for x, w in zip(xs, weights, strict=True))}
    assert _max_err(result.tensors, want) <= result.metadata["released_error_bound"]
    assert result.metadata["weighting"] == "client"
    assert result.metadata["client_weight_sum"] == pytest.approx(3.5)
    with pytest.raises(ConfigurationError, match="weights"):
        server.aggregate([client.encrypt(xs[0])], weights=[1.0])  # fast has no rescale prime


def test_server_weights(holders: dict[str, KeyHolder]) -> None:
    kh = holders["weighted"]
    client = HEClient(kh.public_context_bytes(), workers=1)
    server = HEServer(kh.server_context_bytes())
    rng = np.random.default_rng(4)
    xs = [{"a": rng.normal(size=5000), "b": rng.normal(size=3)} for _ in range(5)]
    weights = [0.1, 0.2, 0.3, 0.25, 0.15]
    agg = server.aggregate([client.encrypt(x) for x in xs], weights=weights)
    result = kh.decrypt_result(agg)
    want = {k: sum(w * x[k] for x, w in zip(xs, weights, strict=True)) for k in ("a", "b")}
    assert _max_err(result.tensors, want) <= result.metadata["released_error_bound"]
    assert result.metadata["weighting"] == "server"
    assert result.metadata["server_weight_sum"] == pytest.approx(1.0)
    for bad in ([1.0] * 4, [float("nan")] * 5, [-1.0] * 5, [400.0] * 5):
        with pytest.raises(ConfigurationError):
            server.aggregate([client.encrypt(x) for x in xs], weights=bad)


def test_download_is_mod_switched(holders: dict[str, KeyHolder]) -> None:
    """weighted: uploads carry 2 primes, the aggregate 1 (≈ half the bytes); fast: 1 and 1."""
    x = {"a": np.ones(3 * 4096)}
    sizes = {}
    for name in ("fast", "weighted"):
        kh = holders[name]
        client = HEClient(kh.public_context_bytes(), workers=1)
        up = client.encrypt(x)
        down = HEServer(kh.server_context_bytes()).aggregate([up, up])
        sizes[name] = (len(up), len(down))
    assert sizes["fast"][1] == pytest.approx(sizes["fast"][0], rel=0.01)
    assert sizes["weighted"][1] < 0.6 * sizes["weighted"][0]


def test_value_limit_and_bad_weight(holders: dict[str, KeyHolder]) -> None:
    client = HEClient(holders["fast"].public_context_bytes(), workers=1)
    limit = client.preset.max_abs_value
    with pytest.raises(ConfigurationError, match="big"):
        client.encrypt({"small": np.zeros(3), "big": np.full(3, 2 * limit)})
    with pytest.raises(ConfigurationError, match="big"):
        client.encrypt({"big": np.full(3, 0.75 * limit)}, weight=2.0)
    for w in (float("inf"), -1.0, float("nan")):
        with pytest.raises(ConfigurationError, match="weight"):
            client.encrypt({"a": np.zeros(3)}, weight=w)
    with pytest.raises(ConfigurationError):
        client.encrypt({"a": np.array([np.nan])})


def test_server_context_cannot_decrypt(holders: dict[str, KeyHolder]) -> None:
    kh = holders["fast"]
    ctx, _, _ = load_public_context(kh.server_context_bytes())
    assert not ctx.is_private()
    vec = ts.ckks_vector(ctx, [1.0, 2.0])
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()


def test_secret_context_refused_by_server_and_client(holders: dict[str, KeyHolder]) -> None:
    kh = holders["fast"]
    secret = kh.secret_context_bytes()
    for role in (HEServer, HEClient):
        with pytest.raises(SecretKeyExposureError):
            role(secret)
    # a secret TenSEAL context relabelled as public is still refused (is_private check)
    preset, _, ts_bytes = unpack_context(secret, allow_insecure=False)
    forged = pack_context(preset, 1, ts_bytes)
    with pytest.raises(SecretKeyExposureError):
        HEServer(forged)


def test_key_holder_roundtrip_from_secret_bytes(holders: dict[str, KeyHolder]) -> None:
    kh = holders["fast"]
    again = KeyHolder.from_secret_context_bytes(kh.secret_context_bytes(), workers=1)
    assert again.fingerprint == kh.fingerprint
    client = HEClient(kh.public_context_bytes(), workers=1)
    agg = HEServer(kh.server_context_bytes()).aggregate([client.encrypt({"a": np.arange(5.0)})])
    np.testing.assert_allclose(again.decrypt(agg)["a"], np.arange(5.0), atol=1e-5)


@pytest.mark.slow
def test_process_pool_matches_in_process(holders: dict[str, KeyHolder]) -> None:
    """Encryption/decryption over a 2-process pool (≥ 16 chunks) gives the same sums."""
    kh = holders["fast"]
    pooled_kh = KeyHolder.from_secret_context_bytes(kh.secret_context_bytes(), workers=2)
    client = HEClient(kh.public_context_bytes(), workers=2)
    rng = np.random.default_rng(5)
    xs = [{"a": rng.normal(size=20 * 4096 - 17)} for _ in range(2)]
    agg = HEServer(kh.server_context_bytes()).aggregate([client.encrypt(x) for x in xs])
    got = pooled_kh.decrypt_result(agg)
    assert got.metadata["ciphertexts"] == 20
    assert (
        _max_err(got.tensors, {"a": xs[0]["a"] + xs[1]["a"]})
        <= got.metadata["released_error_bound"]
    )


def test_noise_flooding_release(holders: dict[str, KeyHolder]) -> None:
    """Flooded release: noise on the grid with the asked σ. The sample std of 8192 draws lies
    within ±5 % of σ except w.p. < 1e-9 (std of the estimate ≈ σ/√(2·8192) ≈ 0.8 %)."""
    from securefl.he import ReleasePolicy

    kh = holders["fast"]
    flooding = KeyHolder.from_secret_context_bytes(
        kh.secret_context_bytes(), workers=1, policy=ReleasePolicy(flood_sigma=4e-2)
    )
    client = HEClient(kh.public_context_bytes(), workers=1)
    x = {"a": np.linspace(-1, 1, 8192)}
    result = flooding.decrypt_result(
        HEServer(kh.server_context_bytes()).aggregate([client.encrypt(x)])
    )
    noise = result.tensors["a"] - x["a"]
    sigma = result.metadata["flood_sigma"]
    # σ is a whole number of grid steps (the grid is sized for max_contributions = 1024)
    assert abs(sigma - 4e-2) <= result.metadata["release_grid"] / 2
    assert abs(float(np.std(noise)) / sigma - 1) < 0.05
    grid = result.metadata["release_grid"]
    steps = result.tensors["a"] / grid
    np.testing.assert_array_equal(steps, np.rint(steps))  # released values lie on the grid
    assert result.metadata["flooding_bits"] > 10
