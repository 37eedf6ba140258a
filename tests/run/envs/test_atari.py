"""Atari games as training envs (``env.preprocess=atari``, run/envs/atari.py), on both backends:
uint8 [4, 84, 84] frame stacks stored as they come, a lost life terminal for learning while the
game goes on, sign(reward) learned while the logged returns stay raw, and the two backends' games
alike in what a fixed policy scores.

Needs the atari extra (ale-py, opencv); the EnvPool cases need the envpool extra. Both are in
``dev``, so CI runs every case."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import stats

from ppo_research.errors import ConfigError
from ppo_research.run.config.compose import compose
from ppo_research.run.config.schema import validate
from ppo_research.run.envs import atari
from ppo_research.run.envs.lockstep import step_alone
from ppo_research.run.envs.training import TrainingEnvs
from ppo_research.run.rundir import checkpoint

HAVE_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("cv2") is not None
HAVE_ENVPOOL = importlib.util.find_spec("envpool") is not None
pytestmark = pytest.mark.skipif(not HAVE_ALE, reason=f"the atari extra is not installed: {atari.EXTRA}")
BACKENDS = ["gymnasium", pytest.param("envpool", marks=pytest.mark.skipif(not HAVE_ENVPOOL,
                                                                          reason="EnvPool is not installed"))]


def env_config(*overrides: str):
    return validate(compose(["env=breakout", *overrides]).cfg).env


def play(envs: TrainingEnvs, steps: int, seed: int = 0):
    """``steps`` steps of uniformly random actions; yields what each step returned."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield step_alone(envs, rng.integers(envs.single_action_space.n, size=envs.num_envs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_uint8_stacks_of_four_84x84(backend):
    envs = TrainingEnvs(env_config(f"env.backend={backend}"), 2, 0.99, [1, 2])
    try:
        assert envs.single_observation_space.shape == (4, 84, 84) and envs.obs.dtype == np.uint8
        frames = [obs for obs, *_ in play(envs, 30)]
        assert all(f.dtype == np.uint8 and f.shape == (2, 4, 84, 84) for f in frames)
        # a stack is the last 4 frames: frame k of step t is frame k+1 of step t-1
        assert np.array_equal(frames[-1][:, :3], frames[-2][:, 1:])
        assert frames[-1].max() > 0  # the screen is drawn
    finally:
        envs.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_lost_life_is_terminal_for_learning_and_the_game_goes_on(backend):
    envs = TrainingEnvs(env_config(f"env.backend={backend}"), 2, 0.99, [3, 4])
    try:
        lost, games = 0, []
        for obs, scaled, terminated, truncated, valid, finished in play(envs, 800):
            games += finished
            game_over = envs.next_is_reset  # the vector env resets these next step
            lost += int((terminated & ~game_over).sum())
            # a life lost mid-game: the next step is an ordinary one of the same game
            assert not (terminated & ~game_over & ~valid).any()
        assert lost >= 4 * len(games) > 0  # Breakout: 5 lives a game, each game ended with its last
        assert all(length > 50 for _, length in games)  # whole games, not single lives
    finally:
        envs.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_rollout_learns_the_rewards_sign_and_the_returns_stay_raw(backend):
    """BeamRider scores 44 and more a hit: the logged returns are those raw scores, the rollout's
    rewards their signs; the same seeds and actions play the same game either way."""
    runs = {}
    for sign in (True, False):
        cfg = validate(compose(["env=beamrider", f"env.backend={backend}", f"env.sign_reward={sign}"]).cfg).env
        envs = TrainingEnvs(cfg, 2, 0.99, [7, 8])
        try:
            stepped = list(play(envs, 600, seed=1))
            in_flight = envs.episodes.returns.copy()
        finally:
            envs.close()
        finished = [game for s in stepped for game in s[5]]
        runs[sign] = (np.stack([s[1] for s in stepped]), finished, in_flight)
    (signed, games, in_flight), (raw, raw_games, raw_in_flight) = runs[True], runs[False]
    assert raw.max() > 1
    assert np.array_equal(signed, np.sign(raw)) and set(np.unique(signed)) <= {-1.0, 0.0, 1.0}
    assert games == raw_games and np.array_equal(in_flight, raw_in_flight)  # the returns: raw both times
    assert sum(r for r, _ in games) + in_flight.sum() == raw.sum() > signed.sum()


def test_both_backends_play_alike():
    """A uniformly random policy's game scores and lengths: the same distribution on both backends
    (Welch's t-test; the games differ only in their random no-op starts and seeds)."""
    if not HAVE_ENVPOOL:
        pytest.skip("EnvPool is not installed")
    scores = {}
    for backend in ("gymnasium", "envpool"):
        envs = TrainingEnvs(env_config(f"env.backend={backend}"), 8, 0.99, list(range(20, 28)))
        try:
            games = [g for *_, finished in play(envs, 1200, seed=2) for g in finished]
        finally:
            envs.close()
        assert len(games) >= 30
        scores[backend] = np.array(games)
    for column, what in ((0, "score"), (1, "length")):
        a, b = scores["gymnasium"][:, column], scores["envpool"][:, column]
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
        assert p > 0.001, f"random-policy game {what}: gymnasium {a.mean():.2f}, EnvPool {b.mean():.2f} (p={p:.2g})"


def test_ids_and_errors():
    assert atari.game_name("ALE/Breakout-v5") == "Breakout" and atari.envpool_id("ALE/BeamRider-v5") == "BeamRider-v5"
    assert atari.game_name("PongNoFrameskip-v4") == "Pong"
    with pytest.raises(ConfigError, match="an Atari id"):
        atari.game_name("ALE/not an id")


def test_a_checkpointed_game_continues_bit_for_bit():
    """The emulator (with its RNG), the max-pooling buffer and the frame stack are in the
    checkpoint: a game restored mid-way plays on exactly as the original (lives and episodic-life
    terminations included), whatever the restored envs were seeded with."""
    cfg = env_config()
    original = TrainingEnvs(cfg, 2, 0.99, [1, 2])
    rng = np.random.default_rng(5)
    actions = [rng.integers(4, size=2) for _ in range(500)]
    try:
        for a in actions[:230]:  # some lives lost, games under way
            step_alone(original, a)
        state = checkpoint._from_storable(checkpoint._to_storable(original.state_dict()))  # as stored on disk
        expected = [step_alone(original, a) for a in actions[230:]]
    finally:
        original.close()
    restored = TrainingEnvs(cfg, 2, 0.99, [77, 78])
    try:
        assert restored.load_state_dict(state, reseed=[0, 1]) is True
        got = [step_alone(restored, a) for a in actions[230:]]
    finally:
        restored.close()
    assert sum(int(e[2].sum()) for e in expected) > 0  # lives were lost after the checkpoint
    for e, g in zip(expected, got):
        for x, y in zip(e[:5], g[:5]):
            np.testing.assert_array_equal(x, y)
        assert e[5] == g[5]
