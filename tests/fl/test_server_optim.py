"""Server optimisers (Reddi et al. 2021, Alg. 2) against hand-computed steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from securefl.errors import ConfigurationError
from securefl.fl.server_optim import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    ServerState,
    cosine_lr,
    init_state,
    make_server_optimizer,
    server_step,
    with_lr,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(1, 6), st.integers(1, 5)).flatmap(
        lambda dn: st.tuples(
            arrays(np.float64, dn[0], elements=finite),
            arrays(np.float64, (dn[1], dn[0]), elements=finite),
        )
    )
)
def test_fedavg_lr1_adds_the_mean_update(case: tuple[np.ndarray, np.ndarray]) -> None:
    params, client_updates = case
    mean = client_updates.mean(axis=0)
    new, state = server_step(FedAvg(1.0), params, mean, init_state(FedAvg(1.0), params.size))
    np.testing.assert_allclose(new, params + mean, rtol=0, atol=1e-12)
    assert state.step == 1


def test_fedavg_server_lr() -> None:
    new, _ = server_step(FedAvg(2.0), np.array([1.0, -1.0]), np.array([0.5, 0.25]), ServerState(0))
    np.testing.assert_array_equal(new, [2.0, -0.5])


def test_fedavgm_two_steps_by_hand() -> None:
    opt = FedAvgM(lr=0.5, momentum=0.9)
    x, s = np.array([0.0, 1.0]), init_state(opt, 2)
    x, s = server_step(opt, x, np.array([1.0, 2.0]), s)  # m = [1, 2]; x = [0.5, 2]
    np.testing.assert_allclose(x, [0.5, 2.0])
    x, s = server_step(opt, x, np.array([-1.0, 0.0]), s)  # m = [-0.1, 1.8]; x = [0.45, 2.9]
    np.testing.assert_allclose(s.m, [-0.1, 1.8])
    np.testing.assert_allclose(x, [0.45, 2.9])
    assert s.step == 2 and s.v is None


def test_fedadam_first_step_by_hand() -> None:
    opt = FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    s = init_state(opt, 1)
    np.testing.assert_array_equal(s.v, [1e-6])
    x, s = server_step(opt, np.array([0.0]), np.array([2.0]), s)
    m = 0.1 * 2.0
    v = 0.99 * 1e-6 + 0.01 * 4.0
    assert s.m is not None and s.v is not None
    assert s.m[0] == pytest.approx(m) and s.v[0] == pytest.approx(v)
    assert x[0] == pytest.approx(0.1 * m / (math.sqrt(v) + 1e-3))


def test_fedyogi_second_moment_by_hand() -> None:
    opt = FedYogi(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    s = ServerState(3, np.array([0.5, 0.5]), np.array([1.0, 0.01]))
    delta = np.array([0.5, 0.5])  # Δ² = 0.25: above v[1], below v[0]
    x, s2 = server_step(opt, np.zeros(2), delta, s)
    v = np.array([1.0 - 0.01 * 0.25, 0.01 + 0.01 * 0.25])  # v − (1−β₂)Δ² sign(v − Δ²)
    m = 0.9 * 0.5 + 0.1 * 0.5
    assert s2.v is not None
    np.testing.assert_allclose(s2.v, v)
    np.testing.assert_allclose(x, 0.1 * m / (np.sqrt(v) + 1e-3))
    assert s2.step == 4


def test_inputs_are_not_modified() -> None:
    opt = FedAdam()
    x, d, s = np.ones(3), np.full(3, 0.5), init_state(FedAdam(), 3)
    m0, v0 = s.m.copy(), s.v.copy()  # type: ignore[union-attr]
    server_step(opt, x, d, s)
    np.testing.assert_array_equal(x, 1.0)
    np.testing.assert_array_equal(d, 0.5)
    np.testing.assert_array_equal(s.m, m0)
    np.testing.assert_array_equal(s.v, v0)


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: FedAvg(0.0), "server_lr"),
        (lambda: FedAvg(math.nan), "server_lr"),
        (lambda: FedAvgM(momentum=1.0), "server_momentum"),
        (lambda: FedAdam(beta1=-0.1), "server_beta1"),
        (lambda: FedYogi(beta2=1.0), "server_beta2"),
        (lambda: FedAdam(tau=0.0), "server_tau"),
        (lambda: make_server_optimizer("sgd"), "server_optimizer"),
        (lambda: make_server_optimizer("fedavg", momentum=0.9), "server_optimizer"),
    ],
)
def test_bad_hyperparameters_are_refused(make: object, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make()  # type: ignore[operator]
    assert info.value.parameter == parameter


def test_bad_updates_and_states_are_refused() -> None:
    opt = FedAdam()
    s = init_state(opt, 2)
    with pytest.raises(ConfigurationError, match="NaN") as info:
        server_step(opt, np.zeros(2), np.array([0.0, math.nan]), s)
    assert info.value.parameter == "update"
    with pytest.raises(ConfigurationError) as info:
        server_step(opt, np.zeros(2), np.zeros(3), s)
    assert info.value.parameter == "update"
    with pytest.raises(ConfigurationError) as info:
        server_step(opt, np.zeros(2), np.zeros(2), ServerState(0))  # FedAvg's state
    assert info.value.parameter == "state"
    with pytest.raises(ConfigurationError) as info:
        server_step(FedAvgM(), np.zeros(3), np.zeros(3), init_state(FedAvgM(), 2))
    assert info.value.parameter == "state"
    with pytest.raises(ConfigurationError):
        init_state(opt, 0)


def test_make_server_optimizer_by_name() -> None:
    assert make_server_optimizer("fedyogi", lr=0.05) == FedYogi(lr=0.05)
    assert make_server_optimizer("fedavgm") == FedAvgM()


def test_cosine_schedule() -> None:
    assert cosine_lr(1.0, 0, 10, warmup=2) == pytest.approx(0.5)
    assert cosine_lr(1.0, 2, 10, warmup=2) == pytest.approx(1.0)
    assert cosine_lr(1.0, 10, 10, warmup=2, floor=0.1) == pytest.approx(0.1)
    assert with_lr(FedAdam(), 0.3).lr == 0.3
    with pytest.raises(ConfigurationError):
        with_lr(FedAdam(), -1.0)
    with pytest.raises(ConfigurationError):
        cosine_lr(1.0, 0, 5, warmup=5)
