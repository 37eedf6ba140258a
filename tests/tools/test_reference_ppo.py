"""The benchmark's reference PPO (ppo_research/tools/reference_ppo.py): it learns, and it runs on MuJoCo."""
from __future__ import annotations

import json

from ppo_research.tools import reference_ppo


def test_reference_ppo_learns_cartpole(tmp_path):
    # 60 iterations of 4 envs x 128 steps. Seeds 0-4 end between 240 and 310 (random policy: ~22).
    curve = tmp_path / "episodes.jsonl"
    result = reference_ppo.train("CartPole-v1", 30720, seed=0, num_envs=4, num_steps=128, num_epochs=4,
                                 minibatch_size=128, learning_rate=2.5e-4, episodes=str(curve))
    assert result["global_step"] == 30720
    assert result["train_return"] is not None and result["train_return"] > 150, result
    # --episodes: every finished episode, in order, with the step it ended at; the JSON line's
    # train_return is the mean of the last 20 of them
    episodes = [json.loads(line) for line in curve.read_text().splitlines()]
    steps = [e["global_step"] for e in episodes]
    assert len(episodes) > 100 and steps == sorted(steps) and 0 < steps[0] and steps[-1] <= 30720
    assert all(e["return"] == int(e["return"]) >= 1 for e in episodes)  # CartPole: +1 per step
    assert result["train_return"] == sum(e["return"] for e in episodes[-20:]) / 20
    # an episode ends every return-many steps per env: 4 envs' episodes add up to at most the steps taken
    assert sum(e["return"] for e in episodes) <= 30720


def test_reference_ppo_halfcheetah_cli(capsys):
    assert reference_ppo.main(["--env", "HalfCheetah-v5", "--steps", "2048", "--seed", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"global_step", "wall_time_s", "sps", "train_return"}
    assert result["global_step"] == 2048
    assert result["sps"] > 0 and result["wall_time_s"] > 0
    assert result["train_return"] is not None  # two 1000-step episodes finish within 2048 steps


def test_reference_ppo_rejects_unknown_arguments():
    try:
        reference_ppo.train("CartPole-v1", 128, num_steps=128, learning_rat=1e-3)
    except TypeError as err:
        assert "learning_rat" in str(err)
    else:
        raise AssertionError("a misspelt argument was accepted")
