"""Advantage estimators against brute-force references on NEXT_STEP-shaped batches."""
from __future__ import annotations

import numpy as np
import pytest

from ppo_research.algo.advantages import GAE, MonteCarlo, NStepTD
from ppo_research.errors import ConfigError


def next_step_batch(rng: np.random.Generator, T: int = 40, N: int = 5, p_end: float = 0.12):
    """A rollout as gymnasium's NEXT_STEP autoreset lays it out, per env column: episodes end by
    termination or truncation, and the step after every end is an invalid reset step (reward 0)."""
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T, N)).astype(np.float32)
    last_value = rng.normal(size=N).astype(np.float32)
    terminated = np.zeros((T, N), np.float32)
    episode_end = np.zeros((T, N), np.float32)
    valid = np.ones((T, N), bool)
    for n in range(N):
        for t in range(T):
            if t > 0 and episode_end[t - 1, n]:
                valid[t, n] = False
                rewards[t, n] = 0.0
                continue
            if rng.random() < p_end:
                episode_end[t, n] = 1.0
                terminated[t, n] = float(rng.random() < 0.5)  # else a truncation
    next_values = np.concatenate([values[1:], last_value[None]])
    assert (~valid).any() and (terminated > 0).any() and ((episode_end > 0) & (terminated == 0)).any()
    return dict(rewards=rewards, values=values, next_values=next_values, terminated=terminated,
                episode_end=episode_end, valid=valid)


def at_valid_steps(b, advantage) -> np.ndarray:
    """``advantage(t, n)`` at every valid step of the batch ``b``, 0 elsewhere."""
    T, N = b["rewards"].shape
    out = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            if b["valid"][t, n]:
                out[t, n] = advantage(t, n)
    return out


def gae_reference(b, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k}, summed forward until the episode or rollout ends."""

    def advantage(t, n):
        total, k = 0.0, 0
        while t + k < len(b["rewards"]):
            s = t + k
            bootstrap = 0.0 if b["terminated"][s, n] else b["next_values"][s, n]
            delta = b["rewards"][s, n] + gamma * bootstrap - b["values"][s, n]
            total += (gamma * lam) ** k * delta
            if b["episode_end"][s, n]:
                break
            k += 1
        return total

    return at_valid_steps(b, advantage)


def nstep_reference(b, gamma, n_steps):
    """sum_{k<m} gamma^k r_{t+k} + gamma^m * bootstrap - V(s_t), m cut at episode/rollout end."""

    def advantage(t, n):
        total = 0.0
        for k in range(n_steps):
            s = t + k
            total += gamma**k * b["rewards"][s, n]
            if b["episode_end"][s, n] or k == n_steps - 1 or s == len(b["rewards"]) - 1:
                bootstrap = 0.0 if b["terminated"][s, n] else b["next_values"][s, n]
                total += gamma ** (k + 1) * bootstrap
                break
        return total - b["values"][t, n]

    return at_valid_steps(b, advantage)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.97, 0.5)])
def test_gae_matches_brute_force(seed, gamma, lam):
    b = next_step_batch(np.random.default_rng(seed))
    np.testing.assert_allclose(GAE(gamma, lam)(**b), gae_reference(b, gamma, lam), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [1, 2, 5, 100])
def test_nstep_td_matches_brute_force(seed, n):
    b = next_step_batch(np.random.default_rng(seed))
    np.testing.assert_allclose(NStepTD(0.95, n)(**b), nstep_reference(b, 0.95, n), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_mc_equals_gae_lambda_one(seed):
    b = next_step_batch(np.random.default_rng(seed))
    np.testing.assert_allclose(MonteCarlo(0.99)(**b), GAE(0.99, 1.0)(**b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_td1_equals_gae_lambda_zero(seed):
    b = next_step_batch(np.random.default_rng(seed))
    np.testing.assert_allclose(NStepTD(0.99, 1)(**b), GAE(0.99, 0.0)(**b), rtol=1e-5, atol=1e-5)


def test_td_with_long_n_equals_mc():
    b = next_step_batch(np.random.default_rng(7))
    np.testing.assert_allclose(NStepTD(0.99, 10_000)(**b), MonteCarlo(0.99)(**b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("estimator", [GAE(0.99, 0.95), MonteCarlo(0.99), NStepTD(0.99, 3)])
def test_reset_step_contents_do_not_matter(estimator):
    """What the env returns on a NEXT_STEP reset step (reward, and the value of the stale
    observation as a baseline) cannot change any valid step's advantage, and the reset step
    itself gets advantage 0."""
    b = next_step_batch(np.random.default_rng(3))
    base = estimator(**b)
    poisoned = {k: v.copy() for k, v in b.items()}
    invalid = ~b["valid"]
    poisoned["rewards"][invalid] = 1e6
    out = estimator(**poisoned)
    np.testing.assert_array_equal(out[b["valid"]], base[b["valid"]])
    assert (out[invalid] == 0).all()


def test_truncation_bootstraps_and_termination_does_not():
    """One env, two one-step episodes: the first truncated, the second terminated."""
    b = dict(rewards=np.array([[1.0], [0.0], [1.0], [0.0]], np.float32),
             values=np.array([[0.0], [5.0], [0.0], [7.0]], np.float32),
             next_values=np.array([[5.0], [9.0], [7.0], [9.0]], np.float32),
             terminated=np.array([[0], [0], [1], [0]], np.float32),
             episode_end=np.array([[1], [0], [1], [0]], np.float32),
             valid=np.array([[True], [False], [True], [False]]))
    adv = GAE(0.5, 0.9)(**b)
    assert adv[0, 0] == pytest.approx(1.0 + 0.5 * 5.0)  # V(final obs) of the truncated episode
    assert adv[2, 0] == pytest.approx(1.0)  # terminated: no bootstrap


@pytest.mark.parametrize("make,key", [(lambda: GAE(0.99, 1.5), "advantage.lam"), (lambda: GAE(0.0, 0.9), "advantage.gamma"),
                                      (lambda: MonteCarlo(1.2), "advantage.gamma"), (lambda: NStepTD(0.9, 0), "advantage.n")])
def test_out_of_range_parameters_are_rejected(make, key):
    with pytest.raises(ConfigError, match=key):
        make()
