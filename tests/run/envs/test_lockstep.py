"""Members' envs stepped together give, bit for bit, what each member's envs give alone."""
import numpy as np
import pytest

from ppo_research.run.config.schema import EnvConfig
from ppo_research.run.envs.lockstep import LockstepEnvs, step_alone
from ppo_research.run.envs.training import TrainingEnvs


def _members(cfg, num_envs, gammas):
    return [TrainingEnvs(cfg, num_envs, gamma, [100 * k + i for i in range(num_envs)])
            for k, gamma in enumerate(gammas)]


@pytest.mark.parametrize("env_id,num_envs,max_steps,normalise", [
    ("Pendulum-v1", 4, 30, True),
    ("CartPole-v1", 8, 25, True),     # 8 envs: numpy's pairwise sums; short episodes: reset steps
    ("CartPole-v1", 3, None, False),  # nothing normalised
    ("HalfCheetah-v5", 1, 40, True),
])
def test_lockstep_envs_match_each_member_alone(env_id, num_envs, max_steps, normalise):
    cfg = EnvConfig(id=env_id, max_episode_steps=max_steps, normalize_obs=normalise, normalize_reward=normalise)
    gammas = [0.99, 0.9, 0.95]
    alone, together = _members(cfg, num_envs, gammas), _members(cfg, num_envs, gammas)
    space = alone[0].single_action_space
    space.seed(3)
    for it in range(2):  # two rollouts: the state handed back is picked up again
        lockstep = LockstepEnvs(together)
        np.testing.assert_array_equal(lockstep.obs, np.stack([m.obs for m in alone]))
        finished = 0
        for _ in range(70):
            actions = np.stack([np.stack([space.sample() for _ in range(num_envs)]) for _ in gammas])
            stacked = lockstep.step(actions)
            for k, member in enumerate(alone):
                solo = step_alone(member, actions[k])
                for x, y in zip(solo[:5], stacked[:5]):
                    assert x.dtype == y.dtype
                    np.testing.assert_array_equal(x, y[k])
                assert solo[5] == stacked[5][k]
                finished += len(solo[5])
        lockstep.release()
        for a, b in zip(alone, together):
            for x, y in zip(_state(a), _state(b)):
                np.testing.assert_array_equal(x, y)
    if max_steps is not None:
        assert finished > 0  # episode ends and reset steps were exercised


def _state(envs: TrainingEnvs):
    s = envs.reward_scaler.stats
    o = envs.obs_norm.stats
    return [envs.obs, envs.next_is_reset, envs.episodes.returns, envs.episodes.lengths, o.mean, o.var,
            np.float64(o.count), s.mean, s.var, np.float64(s.count), envs.reward_scaler.discounted]
