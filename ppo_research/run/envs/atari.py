"""Atari games with the standard preprocessing (``env.preprocess=atari``), on gymnasium + ale-py.

The stack is the one of Mnih et al. (2015) as PPO's paper used it (Schulman et al. 2017, sec. 6.4):

    ALE/<Game>-v5, frameskip=1, no sticky actions      the emulator, one frame per step
    AtariPreprocessing                                 up to 30 no-op actions after a reset; each
                                                       step repeats the action 4 frames and keeps
                                                       the max of the last two; 84x84 grayscale
    FireReset                                          presses FIRE after a reset in games that
                                                       wait for it (Breakout, BeamRider, ...)
    FrameStackObservation(4)                           observations uint8 [4, 84, 84]

Two parts of the usual stack are not wrappers here, so that the logged episode returns are the
games' raw scores (run/envs/lockstep.py applies them to what the rollout stores):

- episodic life (``env.episodic_life``): the step that loses a life is terminal for learning (no
  bootstrap past it, the advantage stops there); the game goes on, and an episode is a whole game;
- reward clipping (``env.sign_reward``): the rollout stores sign(r); the episode returns are raw.

EnvPool's Atari envs (``env.backend=envpool``) are made with the same settings
(``ENVPOOL_SETTINGS``): its own preprocessing, with its episodic life and reward clipping off.
"""
from __future__ import annotations

import re

import gymnasium as gym
import numpy as np

from ...errors import ConfigError, first_line

#: The install that adds the Atari emulator and the image resizing AtariPreprocessing needs.
EXTRA = 'pip install -c constraints.txt -e ".[atari]"'
#: The standard preprocessing's numbers.
NOOP_MAX, FRAME_SKIP, SCREEN_SIZE, FRAME_STACK = 30, 4, 84, 4
#: ALE's v5 default: 108,000 frames (30 minutes of play), 27,000 agent steps at frame skip 4.
MAX_FRAMES = 108_000
#: EnvPool's Atari settings that match the gymnasium stack above.
ENVPOOL_SETTINGS = dict(episodic_life=False, reward_clip=False, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP,
                        img_height=SCREEN_SIZE, img_width=SCREEN_SIZE, stack_num=FRAME_STACK, gray_scale=True,
                        use_fire_reset=True, repeat_action_probability=0.0,
                        max_episode_steps=MAX_FRAMES // FRAME_SKIP)


def register_ale() -> None:
    """Register ale-py's ``ALE/...`` ids with gymnasium, or a one-line ConfigError naming the extra."""
    try:
        import ale_py
        import cv2  # noqa: F401  (AtariPreprocessing resizes with it)
    except ImportError as err:
        raise ConfigError("env.preprocess", "atari", f"ale-py and opencv installed: {EXTRA} "
                                                     f"({type(err).__name__}: {first_line(err)})") from None
    gym.register_envs(ale_py)


def game_name(env_id: str) -> str:
    """``ALE/Breakout-v5`` -> ``Breakout`` (the game, as EnvPool names it: ``Breakout-v5``)."""
    match = re.fullmatch(r"(?:ALE/)?([A-Za-z0-9]+?)(?:NoFrameskip)?-v\d+", env_id)
    if match is None:
        raise ConfigError("env.id", env_id, "an Atari id such as ALE/Breakout-v5 with env.preprocess=atari")
    return match.group(1)


def envpool_id(env_id: str) -> str:
    return f"{game_name(env_id)}-v5"


class FireReset(gym.Wrapper):
    """After each reset, press FIRE (then the next action, as the classic wrapper does) in games
    that do not start until it is pressed."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.fires = len(meanings) >= 3 and meanings[1] == "FIRE"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if not self.fires:
            return obs, info
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


def make_atari_env(env_id: str, kwargs: dict, max_episode_steps: int | None, render_mode: str | None) -> gym.Env:
    """The preprocessed game (module docstring). ``kwargs`` go to ALE (e.g. ``mode``, ``difficulty``);
    ``max_episode_steps`` counts agent steps (4 frames each)."""
    register_ale()
    game_name(env_id)  # an id this preprocessing knows how to read
    settings = dict(frameskip=1, repeat_action_probability=0.0, max_num_frames_per_episode=MAX_FRAMES, **kwargs)
    if max_episode_steps is not None:
        settings["max_num_frames_per_episode"] = max_episode_steps * FRAME_SKIP
    env = gym.make(env_id, render_mode=render_mode, **settings)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                                          terminal_on_life_loss=False, grayscale_obs=True)
    env = FireReset(env)
    return gym.wrappers.FrameStackObservation(env, FRAME_STACK)


def lives(env: gym.Env) -> int:
    """The lives the game has left (ALE's counter)."""
    return int(env.unwrapped.ale.lives())


def is_image(space: gym.Space) -> bool:
    """An image observation (uint8, [C, H, W]): stored as it comes, never normalised as floats."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
