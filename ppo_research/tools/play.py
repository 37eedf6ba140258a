"""``python -m ppo_research.play <run_dir>``: watch and evaluate a trained policy.

Loads the run's resolved config (``run.json``, else the checkpoint's own copy), rebuilds the
network through ``run.build.build`` (nothing is composed: the checkpoint's config is the run's),
restores the policy weights and the frozen observation-normalisation statistics, and runs
episodes on a fresh env exactly as the run's evaluation does: the mean action (or, with
``--stochastic``, a sample), observations normalised with the checkpoint's statistics, actions
clipped or rescaled to the env's bounds. Without ``--seed``, episode j starts from the run's
own evaluation stream j, so playing the final checkpoint with ``--episodes`` = ``eval.episodes``
reproduces the run's last ``eval_return``.

    python -m ppo_research.play outputs/2026-11-24/12-00-00-000000
    python -m ppo_research.play RUN --episodes 20 --stochastic --seed 7
    python -m ppo_research.play RUN --checkpoint RUN/checkpoints/ckpt_00000010.pt --video hopper.mp4

Any run directory with checkpoints works: single runs, multirun jobs, sweep trials, population
members. Bad input is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import EXIT_BAD_INPUT, CheckpointError, ConfigError

RUN_FILE = "run.json"  # run/train.py writes it into every run directory
NULL_LOGGER = {"_target_": "ppo_research.run.loggers.NullLogger"}


class PlayError(Exception):
    """Bad input for play/export; ``str()`` is one line."""


# -- loading a run -------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """A run's policy as it was at one checkpoint, ready to act."""

    run_dir: Path
    checkpoint: Path
    state: dict  # the checkpoint
    config: dict  # the resolved config the run trained with
    choices: dict[str, str]
    config_source: str  # "run.json" or the checkpoint
    parts: object  # run.build.RunParts; parts.network holds the checkpoint's weights
    obs_norm: object  # run.envs.ObsNormalizer with the checkpoint's frozen statistics
    _actor: object = field(default=None, repr=False)

    @property
    def env_config(self):
        return self.parts.config.env

    @property
    def network(self):
        return self.parts.network

    def make_env(self, render: bool = False):
        from ..run.envs import make_env

        return make_env(self.env_config, render_mode="rgb_array" if render else None)

    def action_adapter(self, action_space):
        from ..run.envs import ActionAdapter

        return ActionAdapter(action_space, self.env_config.action_mode)

    @property
    def actor(self):
        """The run's rollout inference path (its numpy mirror where the network declares one)."""
        if self._actor is None:
            from ..algo.inference import rollout_policy

            self._actor = rollout_policy(self.network)
        return self._actor

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return self.obs_norm(np.asarray(obs), update=False)

    def policy_actions(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The policy's outputs for raw observations [batch, obs_dim], before the action adapter:
        the evaluation's mean action (Gaussian mean, most likely discrete action) or a sample."""
        normalized = self.normalize(obs)
        return self.actor.mode(normalized) if deterministic else self.actor.act(normalized)[0]


def find_checkpoint(run_dir: Path, checkpoint: Optional[Path] = None) -> Path:
    from ..run import checkpoint as ckpt

    if checkpoint is not None:
        path = Path(checkpoint)
        for candidate in (path, ckpt.checkpoint_dir(run_dir) / path):
            if candidate.is_file():
                return candidate
        raise PlayError(f"checkpoint {checkpoint} does not exist")
    found = ckpt.latest(run_dir)
    if found is None and not (run_dir / RUN_FILE).exists() and not ckpt.checkpoint_dir(run_dir).exists():
        raise PlayError(f"{run_dir} is not a run directory (no {RUN_FILE}, no checkpoints/)")
    if found is None:
        raise PlayError(f"{run_dir} has no checkpoints ({ckpt.checkpoint_dir(run_dir)}/ckpt_*.pt): "
                        "nothing to play (was it stopped before its first checkpoint?)")
    return found


def _run_description(run_dir: Path, state: dict, checkpoint: Path) -> tuple[dict, dict, str]:
    """(resolved config, choices, where they came from): run.json first, else the checkpoint."""
    path = run_dir / RUN_FILE
    if path.is_file():
        try:
            described = json.loads(path.read_text())
            return dict(described["config"]), dict(described.get("choices") or {}), RUN_FILE
        except (ValueError, KeyError, TypeError) as err:
            if "config" not in state:
                raise PlayError(f"{path} is unreadable ({type(err).__name__}: {err}) and checkpoint "
                                f"{checkpoint} holds no config") from None
    if "config" not in state:
        raise PlayError(f"neither {path} nor checkpoint {checkpoint} holds the run's config")
    return dict(state["config"]), dict(state.get("choices") or {}), f"checkpoint {checkpoint.name}"


def load_run(run_dir: Path, checkpoint: Optional[Path] = None) -> LoadedRun:
    """The run's network with the checkpoint's weights and normalisation statistics."""
    from omegaconf import OmegaConf

    from ..run import checkpoint as ckpt
    from ..run.build import build
    from ..run.envs import ObsNormalizer

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise PlayError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise PlayError(f"{run_dir} is not a directory (expected a run directory)")
    path = find_checkpoint(run_dir, checkpoint)
    state = ckpt.load(path)  # CheckpointError for anything unreadable or foreign
    config, choices, source = _run_description(run_dir, state, path)
    config = {**config, "logger": dict(NULL_LOGGER), "resume": None}  # play never tracks
    try:
        parts = build(OmegaConf.create(config), choices)
    except ConfigError as err:
        raise PlayError(f"the config of {run_dir} ({source}) does not build: {err}") from None
    try:
        parts.network.load_state_dict(state["policy"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise PlayError(f"checkpoint {path} does not fit the network of {source}: {first}") from None
    parts.network.eval()
    env = parts.config.env
    obs_dim = int(parts.network.obs_dim)
    obs_norm = ObsNormalizer((obs_dim,), env.normalize_obs, env.clip_obs)
    if env.normalize_obs:
        try:
            obs_norm.stats.load_state_dict(state["envs"]["obs_norm"])
        except (KeyError, TypeError) as err:
            raise PlayError(f"checkpoint {path} has no observation statistics ({err}) although "
                            "env.normalize_obs is on") from None
    return LoadedRun(run_dir, path, state, config, choices, source, parts, obs_norm)


# -- playing episodes ----------------------------------------------------------------------------

@dataclass
class PlayResult:
    returns: np.ndarray
    lengths: np.ndarray
    seeds: list[int]
    video: Optional[Path] = None
    frames: int = 0


def episode_seed(loaded: LoadedRun, episode: int, seed: Optional[int] = None) -> int:
    """Episode j starts from evaluation stream j of ``seed`` (default: the run's own seed)."""
    from ..run.seeds import eval_episode_seed

    return eval_episode_seed(int(loaded.config["seed"]) if seed is None else int(seed), episode)


def episode_seeds(loaded: LoadedRun, episodes: int, seed: Optional[int]) -> list[int]:
    return [episode_seed(loaded, j, seed) for j in range(episodes)]


def play(loaded: LoadedRun, episodes: int = 10, deterministic: bool = True, seed: Optional[int] = None,
         video: Optional[Path] = None) -> PlayResult:
    """Run ``episodes`` episodes; with ``video``, the first one is rendered to that file."""
    from ..run.seeds import seed_globals
    from ..run.video import check_writer, prepare_rendering, render_frame, write_video

    if episodes < 1:
        raise PlayError(f"--episodes must be at least 1, got {episodes}")
    if video is not None:
        check_writer(Path(video))
        prepare_rendering()
    seeds = episode_seeds(loaded, episodes, seed)
    seed_globals(int(loaded.config["seed"]) if seed is None else int(seed))  # the sampling stream, if any
    env = loaded.make_env(render=video is not None)
    try:
        adapter = loaded.action_adapter(env.action_space)
        returns, lengths, frames = np.zeros(episodes), np.zeros(episodes, np.int64), []
        for j in range(episodes):
            obs, _ = env.reset(seed=seeds[j])
            recording = video is not None and j == 0
            if recording:
                frames.append(render_frame(env))  # fails here, before any episode, if rendering can't work
            done = False
            while not done:
                action = loaded.policy_actions(obs[None], deterministic)[0]
                obs, reward, terminated, truncated, _ = env.step(adapter(action))
                returns[j] += float(reward)
                lengths[j] += 1
                done = terminated or truncated
                if recording:
                    frames.append(render_frame(env))
    finally:
        env.close()
    path = None
    if video is not None:
        fps = int(env.metadata.get("render_fps") or 30)
        path = write_video(frames, Path(video), fps)
    return PlayResult(returns, lengths, seeds, path, len(frames))


def format_table(loaded: LoadedRun, result: PlayResult, deterministic: bool, seed: Optional[int]) -> str:
    state = loaded.state
    mode = "deterministic (mean or most likely action)" if deterministic else "stochastic (sampled actions)"
    seeds = "the run's evaluation episodes" if seed is None else f"evaluation streams of seed {seed}"
    lines = [f"run {loaded.run_dir}",
             f"checkpoint {loaded.checkpoint.name} (iteration {state.get('iteration')}, "
             f"global step {state.get('global_step')}); config from {loaded.config_source}",
             f"{loaded.env_config.id}, {mode}, {len(result.returns)} episode(s) from {seeds}",
             "",
             f"{'episode':>7}  {'return':>12}  {'length':>6}"]
    for j, (ret, length) in enumerate(zip(result.returns, result.lengths)):
        lines.append(f"{j:>7}  {ret:>12.2f}  {length:>6d}")
    lines.append(f"{'mean':>7}  {result.returns.mean():>12.2f}  {result.lengths.mean():>6.1f}")
    lines.append(f"{'std':>7}  {result.returns.std():>12.2f}  {result.lengths.std():>6.1f}")
    lines.append("")
    lines.append(f"return {result.returns.mean():.2f} ± {result.returns.std():.2f} "
                 f"(mean ± std over {len(result.returns)} episodes)")
    if result.video is not None:
        lines.append(f"video of episode 0 ({result.frames} frames): {result.video}")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line and exit status 2."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_INPUT)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ppo_research.play",
                           description="Run a trained policy: a table of episode returns, optionally a video.")
    parser.add_argument("run_dir", type=Path, help="a run directory (with checkpoints/)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint file (default: the newest in <run_dir>/checkpoints)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    parser.add_argument("--seed", type=int, default=None,
                        help="episode seeds from this seed's evaluation streams (default: the run's, "
                             "i.e. the run's own evaluation episodes)")
    parser.add_argument("--video", type=Path, default=None, help="write the first episode to this .mp4 or .gif")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..run.video import RenderError, check_writer

    args = parse_args(argv)
    try:
        if args.episodes < 1:  # checked before the run is loaded
            raise PlayError(f"--episodes must be at least 1, got {args.episodes}")
        if args.video is not None:
            check_writer(args.video)
        loaded = load_run(args.run_dir, args.checkpoint)
        result = play(loaded, args.episodes, not args.stochastic, args.seed, args.video)
    except (PlayError, CheckpointError, ConfigError, RenderError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(format_table(loaded, result, not args.stochastic, args.seed), flush=True)
    return 0
