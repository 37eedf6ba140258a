"""The benchmark's CNN reference PPO (ppo_research/tools/reference_ppo_cnn.py): the framework's network, the
standard Atari wrappers, and a run end to end."""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_research.algo.cnn import NatureCNN
from ppo_research.tools import reference_ppo_cnn

FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


@pytest.mark.parametrize("actions, count", [(6, 1_687_719), (4, 1_686_693)])  # 4: Breakout's
def test_the_reference_network_is_the_framework_s_nature_cnn(actions, count):
    """Same layers in the same order: the parameter count, every shape, and - with the reference's
    weights copied in - the same logits and values on the same frames."""
    reference = reference_ppo_cnn.Agent(FRAMES.shape, actions)
    framework = NatureCNN(FRAMES, gym.spaces.Discrete(actions))
    assert sum(p.numel() for p in reference.parameters()) == sum(p.numel() for p in framework.parameters()) == count
    assert [p.shape for p in reference.parameters()] == [p.shape for p in framework.parameters()]
    with torch.no_grad():
        for mine, theirs in zip(framework.parameters(), reference.parameters()):
            mine.copy_(theirs)
        frames = torch.randint(0, 256, (5, *FRAMES.shape), dtype=torch.uint8)
        hidden = reference.features(frames)
        torch.testing.assert_close(framework.policy_head(framework.features(frames)), reference.actor(hidden))
        torch.testing.assert_close(framework.value(frames), reference.value(frames))
    # orthogonal init: the policy head at gain 0.01, the value head at 1, zero biases
    assert reference.actor.weight.abs().max() < 0.05 and reference.critic.weight.abs().max() > 0.05
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in (reference.actor, reference.critic, reference.trunk[0]))


def test_the_reference_envs_are_the_standard_atari_stack():
    env = reference_ppo_cnn.make_env("ALE/Breakout-v5")()
    try:
        assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
        assert env.action_space == gym.spaces.Discrete(4)
        ale = env.unwrapped
        assert ale._frameskip == 1 and ale.ale.getFloat("repeat_action_probability") == 0.0
        obs, info = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and info["lives"] == 5
    finally:
        env.close()


def test_reference_cnn_cli_runs_breakout(capsys):
    assert reference_ppo_cnn.main(["--steps", "256", "--num-envs", "2", "--num-steps", "64",
                                   "--minibatch-size", "64", "--num-epochs", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"global_step", "wall_time_s", "sps", "train_return"}
    assert result["global_step"] == 256 and result["sps"] > 0


def test_reference_cnn_rejects_unknown_arguments():
    with pytest.raises(TypeError, match="learning_rat"):
        reference_ppo_cnn.train("ALE/Breakout-v5", 128, learning_rat=1e-3)
