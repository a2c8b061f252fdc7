"""GD-DP: the Laplace query, the fast clipping paths, the noise distribution, and the accountant."""

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf  # noqa: E402
from dp_accounting import pld, rdp  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bpcv.models import build_model  # noqa: E402
from edge_agent.privacy.accountant import (  # noqa: E402
    PrivacyAccountant,
    calibrate_noise_multiplier,
    epsilon_for,
    step_event,
)
from edge_agent.privacy.gaussian_query import GaussianBatchSumQuery  # noqa: E402
from edge_agent.privacy.laplace_query import LaplaceSumQuery  # noqa: E402
from edge_agent.privacy.optimizer import VectorizedDPSGD, supports_ghost_clipping  # noqa: E402


def np_clip_l1(record, c):
    norm = sum(np.abs(t).sum() for t in record)
    return [t * min(1.0, c / norm) for t in record]


def test_zero_noise_query_returns_exactly_the_sum_of_clipped_records():
    rng = np.random.default_rng(0)
    records = [[rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)] for _ in range(7)]
    query = LaplaceSumQuery(l1_norm_clip=1.5, noise_multiplier=0.0)
    state = query.initial_global_state()
    params = query.derive_sample_params(state)
    sample = query.initial_sample_state(records[0])
    for record in records:
        sample = query.accumulate_record(params, sample, record)
    result, _, _ = query.get_noised_result(sample, state)
    expected = [sum(np_clip_l1(r, 1.5)[i] for r in records) for i in range(2)]
    for got, want in zip(result, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
# no subnormals: TensorFlow on CPU flushes them to zero, which is not a clipping question
@given(
    hnp.arrays(np.float32, (4, 5), elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False)),
    st.floats(0.01, 100.0),
)
def test_every_clipped_record_has_l1_norm_at_most_c(record, clip):
    query = LaplaceSumQuery(clip, 1.0)
    clipped = query.preprocess_record(tf.constant(clip, tf.float32), [tf.constant(record)])
    norm = float(tf.reduce_sum(tf.abs(clipped[0])))
    assert norm <= clip * (1 + 1e-5)
    if np.abs(record).sum() <= clip:
        np.testing.assert_allclose(clipped[0].numpy(), record)  # small records pass unchanged


def test_laplace_noise_fits_the_stated_scale_ks():
    query = LaplaceSumQuery(l1_norm_clip=0.5, noise_multiplier=2.0, seed=1234)
    state = query.initial_global_state()
    noised, _, event = query.get_noised_result([tf.zeros(20000)], state)
    sample = noised[0].numpy()
    scale = 0.5 * 2.0
    assert scipy.stats.kstest(sample, scipy.stats.laplace(scale=scale).cdf).pvalue > 0.01
    assert scipy.stats.kstest(sample, scipy.stats.laplace(scale=1.2 * scale).cdf).pvalue < 1e-4  # the test can fail
    assert scipy.stats.kstest(sample, scipy.stats.norm(scale=scale * math.sqrt(2)).cdf).pvalue < 1e-4
    assert event.noise_multiplier == 2.0


def test_gaussian_noise_fits_the_stated_scale_ks():
    query = GaussianBatchSumQuery(l2_norm_clip=0.5, noise_multiplier=2.0, seed=1234)
    noised, _, event = query.get_noised_result([tf.zeros(20000)], query.initial_global_state())
    sample = noised[0].numpy()
    assert scipy.stats.kstest(sample, scipy.stats.norm(scale=1.0).cdf).pvalue > 0.01
    assert scipy.stats.kstest(sample, scipy.stats.norm(scale=1.2).cdf).pvalue < 1e-4  # the test can fail
    assert float(event.noise_multiplier) == pytest.approx(2.0)


@pytest.mark.parametrize("query_class", [GaussianBatchSumQuery, LaplaceSumQuery])
def test_noise_is_fresh_in_every_round_whatever_the_global_seed(query_class):
    """The trainer seeds TensorFlow at the start of every round (tf.keras.utils.set_random_seed). Noise
    drawn by a seeded op inside a tf.function starts its stream again at each such call, so every round
    and every agent would add the same noise (tensorflow-privacy's own GaussianSumQuery does): not
    averaged out over agents, piling up over rounds, and not the independent noise the accounting
    assumes. Each query draws from its own generator instead."""
    optimizer = VectorizedDPSGD(query_class(1.0, 1.0), expected_batch_size=1, learning_rate=1.0)
    step = tf.function(lambda: optimizer.noised_mean([tf.zeros(64)])[0])
    draws = []
    for seed in (1, 2, 1):
        tf.keras.utils.set_random_seed(seed)
        draws.append(step().numpy())
    assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[0], draws[2])
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 0.5  # independent draws, not one stream restarted


def test_laplace_sampler_stays_finite_at_the_edge_of_the_uniform_grid():
    from edge_agent.privacy.laplace_query import laplace_from_uniform

    u = tf.constant([-0.5, -0.5 + 2**-25, 0.0, 0.5 - 2**-24], tf.float32)
    noise = laplace_from_uniform(u, tf.constant(2.0)).numpy()
    assert np.all(np.isfinite(noise)) and noise[2] == 0.0
    assert abs(noise[0]) == pytest.approx(2.0 * 24 * math.log(2), rel=1e-5)


@pytest.fixture(scope="module", params=["mlp:16,8", "wavelet:1,4,2"])
def small_batch(request):
    """A small batch and model: Dense layers, or a linear head behind a frozen wavelet feature map."""
    rng = np.random.default_rng(3)
    model = build_model(request.param, (6, 6, 1), 4, seed=0)
    x = tf.constant(rng.random((12, 6, 6, 1)), tf.float32)
    y = tf.constant(rng.integers(0, 4, 12), tf.int64)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction="none")
    return model, loss_fn, x, y


@pytest.mark.parametrize(
    "query", [LaplaceSumQuery(0.7, 0.0), GaussianBatchSumQuery(0.7, 0.0)], ids=["laplace-l1", "gaussian-l2"]
)
def test_ghost_jacobian_and_library_loop_give_the_same_clipped_sums(small_batch, query):
    model, loss_fn, x, y = small_batch
    assert supports_ghost_clipping(model)
    opt = VectorizedDPSGD(query, expected_batch_size=12, learning_rate=0.1)
    ghost = opt.clipped_sum_ghost(model, loss_fn, x, y)
    jac = opt.clipped_sum_jacobian(model, loss_fn, x, y)
    with tf.GradientTape() as tape:
        losses = loss_fn(y, model(x, training=True))
    library = [g * 12 for g, _ in opt._compute_gradients(losses, model.trainable_variables, tape=tape)]
    for g, j, lib in zip(ghost, jac, library, strict=True):
        np.testing.assert_allclose(g.numpy(), j.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g.numpy(), lib.numpy(), rtol=1e-4, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in ghost) > 0


@pytest.mark.parametrize(("q", "m", "steps"), [(0.01, 1.3, 1000), (512 / 1500, 1.21525, 60), (0.3, 4.0, 30)])
def test_accountant_matches_dp_accounting_called_directly(q, m, steps):
    """The accountant's epsilon equals dp-accounting's for the event written out here by hand: Laplace
    (scale m times the L1 clip) and Gaussian (sd m times the L2 clip), Poisson-sampled at rate q, composed
    over the steps; Laplace by PLD (on a coarser grid: an upper bound, at most 0.005 above), Gaussian by RDP. The second case is the dp_accuracy Laplace run's."""
    import dp_accounting

    delta = 1e-5
    laplace = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.LaplaceDpEvent(m)), steps
    )
    gaussian = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(m)), steps
    )
    fine = pld.PLDAccountant().compose(laplace).get_epsilon(delta)  # the library's default grid, 1e-4
    ours = epsilon_for("laplace", m, q, steps, delta)  # a coarser grid, pessimistic: never below the fine one
    assert fine <= ours <= fine + 0.005
    assert epsilon_for("gaussian", m, q, steps, delta) == pytest.approx(
        rdp.RdpAccountant().compose(gaussian).get_epsilon(delta), rel=1e-6
    )
    pure = epsilon_for("laplace", m, q, steps, 0.0)
    assert pure == pytest.approx(steps * math.log1p(q * math.expm1(1 / m)))
    assert pure >= epsilon_for("laplace", m, q, steps, 1e-9)  # pure DP is the more conservative statement


def test_pure_laplace_epsilon_is_stable_for_tiny_noise():
    from edge_agent.privacy.accountant import amplified_pure_epsilon

    for eps0 in (0.3, 1.0, 2.0, 30.0):
        assert amplified_pure_epsilon(eps0, 0.05) == pytest.approx(math.log1p(0.05 * math.expm1(eps0)))
    assert amplified_pure_epsilon(1000.0, 0.05) == pytest.approx(1000.0 + math.log(0.05))  # no overflow
    assert calibrate_noise_multiplier("laplace", 1e7, 0.02, 3000, 0.0) > 0


def test_laplace_with_delta_falls_back_to_the_pure_bound_where_pld_cannot_be_built():
    """dp-accounting's PLD overflows for a tiny noise multiplier (a privacy loss of ~1000 per step); the
    pure bound holds for every delta, so the accountant states it instead of failing a calibration."""
    q, steps = 256 / 1350, 120
    direct = pld.PLDAccountant()
    with pytest.raises((OverflowError, ValueError)):
        direct.compose(step_event("laplace", 0.001, q), steps)
        direct.get_epsilon(1e-5)
    assert epsilon_for("laplace", 0.001, q, steps, 1e-5) == epsilon_for("laplace", 0.001, q, steps, 0.0)
    m = calibrate_noise_multiplier("laplace", 10.0, q, steps, 1e-5)  # this search once hit the failure
    assert epsilon_for("laplace", m, q, steps, 1e-5) <= 10.0 < epsilon_for("laplace", m, q, steps, 0.0)


def test_calibration_meets_the_target():
    for mechanism, delta in (("laplace", 0.0), ("laplace", 1e-5), ("gaussian", 1e-5)):
        m = calibrate_noise_multiplier(mechanism, 5.0, 0.02, 500, delta)
        assert epsilon_for(mechanism, m, 0.02, 500, delta) <= 5.0
        assert epsilon_for(mechanism, m * 0.97, 0.02, 500, delta) > 5.0


def test_budget_stop_happens_at_the_right_round():
    per_round, q, m = 100, 0.01, 2.0
    budget = epsilon_for("laplace", m, q, 3 * per_round, 0.0) * 1.001  # exactly three rounds fit
    acc = PrivacyAccountant("laplace", m, q, 0.0, budget)
    rounds = 0
    while acc.can_afford(per_round):
        acc.spend(per_round)
        rounds += 1
    assert rounds == 3 and acc.epsilon_spent <= budget


def test_an_account_composes_each_round_onto_what_it_spent_and_states_the_same_epsilon(monkeypatch):
    """An agent's account keeps the PLD of its spent steps and composes one round's onto it: the epsilon
    it states round by round is the one composed from scratch, and no round after the first composes every
    step again. Rounds of another length, a round not afforded and a resumed account stay exact."""
    from edge_agent.privacy import accountant

    per_round, q, delta = 68, 32 / 1080, 1e-5
    m = calibrate_noise_multiplier("laplace", 10.0, q, 12 * per_round, delta)
    from_scratch = []
    monkeypatch.setattr(
        accountant,
        "laplace_steps_loss",
        lambda m, q, steps: from_scratch.append(steps) or accountant.round_loss.__wrapped__(m, q, steps),
    )
    acc = PrivacyAccountant("laplace", m, q, delta, 10.0)
    stated = []
    while acc.can_afford(per_round):
        stated.append(acc.spend(per_round))
    assert len(stated) == 12 and from_scratch == [per_round]  # only the first round's PLD was built whole
    for rounds, epsilon in enumerate(stated, 1):
        assert epsilon == pytest.approx(epsilon_for("laplace", m, q, rounds * per_round, delta), rel=1e-6, abs=0)
    assert acc.epsilon_spent <= 10.0
    acc.spend(per_round // 2)  # a shorter round than the one it afforded: composed from the last kept
    assert acc.epsilon_spent == pytest.approx(epsilon_for("laplace", m, q, acc.steps, delta), rel=1e-6)
    resumed = PrivacyAccountant("laplace", m, q, delta, 10.0, steps=5 * per_round)  # read from disk
    assert resumed.epsilon_spent == pytest.approx(stated[4], rel=1e-6)
    assert resumed.can_afford(per_round) and resumed.epsilon_after(3 * per_round) == pytest.approx(stated[2], rel=1e-6)
    from_scratch.clear()  # agents of one pool with the same settings: what one computed, the others reuse
    pool = [PrivacyAccountant("laplace", m, q, delta, 10.0, steps=7 * per_round) for _ in range(2)]
    assert [a.spend(per_round) for a in pool] == [pytest.approx(stated[7], rel=1e-6)] * 2 and len(from_scratch) == 1
