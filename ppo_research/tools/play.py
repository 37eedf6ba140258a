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
members. Without ``--checkpoint``, the newest checkpoint that loads, verifies and belongs to the
run is played (``run/rundir/resume.py: choose_checkpoint``, as a resume chooses): a newer one that is
truncated or damaged is skipped with one ``warning:`` line and left where it is. Bad input is
one ``error:`` line and exit status 2; a video that cannot be written at the end is one
``error:`` line and exit status 4, after the table of returns.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from ..algo.inference import rollout_policy
from ..errors import EXIT_BAD_INPUT, CheckpointError, ConfigError
from ..run.console import write_line
from ..run.envs.atari import is_image
from ..run.envs.training import ActionAdapter, ObsNormalizer, make_env
from ..run.envs.video import RenderError, check_writer, prepare_rendering, render_frame, write_video
from ..run.loop.build import build
from ..run.loop.seeds import eval_episode_seed, seed_globals
from ..run.rundir import checkpoint as ckpt
from ..run.rundir.resume import choose_checkpoint
from .cli_common import OneLineParser, OutputError, check_output_file, error_line, write_output

RUN_FILE = "run.json"  # run/loop/train.py writes it into every run directory
NULL_LOGGER = {"_target_": "ppo_research.run.loggers.base.NullLogger"}


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

    @property
    def obs_space(self):
        return self.parts.obs_space

    def make_env(self, render: bool = False):

        return make_env(self.env_config, render_mode="rgb_array" if render else None)

    def action_adapter(self, action_space):

        return ActionAdapter(action_space, self.env_config.action_mode)

    @property
    def actor(self):
        """The run's rollout inference path (its numpy mirror where the network declares one)."""
        if self._actor is None:

            self._actor = rollout_policy(self.network)
        return self._actor

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return self.obs_norm(np.asarray(obs), update=False)

    def policy_actions(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The policy's outputs for raw observations [batch, *obs_shape], before the action adapter:
        the evaluation's mean action (Gaussian mean, most likely discrete action) or a sample."""
        normalized = self.normalize(obs)
        return self.actor.mode(normalized) if deterministic else self.actor.act(normalized)[0]


def find_checkpoint(run_dir: Path, checkpoint: Optional[Path] = None) -> Path:
    """The requested checkpoint file, or (without one) the newest file in the run's checkpoints/
    (not yet loaded: ``newest_usable_checkpoint`` chooses among them)."""

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


def newest_usable_checkpoint(run_dir: Path) -> tuple[Path, dict]:
    """(path, state) of the newest checkpoint of ``run_dir`` that loads, verifies and belongs to
    the run, chosen as a resume chooses (``run.resume.choose_checkpoint``). Newer files passed
    over are named in one ``warning:`` line and left in place (play and export only read);
    none usable is a one-line PlayError naming every file and why."""

    try:
        path, state, skipped = choose_checkpoint(run_dir)
    except CheckpointError as err:
        text = str(err)
        text = text.removeprefix(f"cannot resume {run_dir}: ")
        raise PlayError(f"{run_dir}: {text}") from None
    if skipped:
        listed = "; ".join(f"{p.name} ({why})" for p, why in skipped)
        write_line(f"warning: skipped {len(skipped)} newer checkpoint(s) of {run_dir} that cannot be used, left in "
                   f"place: {listed}; using {path.name}")
    return path, state


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

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise PlayError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise PlayError(f"{run_dir} is not a directory (expected a run directory)")
    path = find_checkpoint(run_dir, checkpoint)
    if checkpoint is not None:
        state = ckpt.load(path)  # the one asked for: CheckpointError for anything unreadable or foreign
    else:
        path, state = newest_usable_checkpoint(run_dir)
    config, choices, source = _run_description(run_dir, state, path)
    # play never tracks, and acts on the CPU (one observation at a time; a GPU run plays anywhere)
    config = {**config, "logger": dict(NULL_LOGGER), "resume": None, "device": "cpu"}
    if "precision" in (config.get("network") or {}):  # a network trained in bfloat16 acts (and exports) in float32
        config["network"] = {**config["network"], "precision": "float32"}
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
    obs_norm = ObsNormalizer(parts.obs_space.shape, env.normalize_obs, env.clip_obs, is_image(parts.obs_space))
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
    recording: list = field(default_factory=list, repr=False)  # the first episode's frames, if recorded
    fps: int = 30


def episode_seed(loaded: LoadedRun, episode: int, seed: Optional[int] = None) -> int:
    """Episode j starts from evaluation stream j of ``seed`` (default: the run's own seed)."""

    return eval_episode_seed(int(loaded.config["seed"]) if seed is None else int(seed), episode)


def episode_seeds(loaded: LoadedRun, episodes: int, seed: Optional[int]) -> list[int]:
    return [episode_seed(loaded, j, seed) for j in range(episodes)]


def check_seed(seed: Optional[int]) -> None:
    """A seed is any non-negative integer (run/loop/seeds.py), as the run's own ``seed``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise PlayError(f"--seed must be a non-negative integer, got {seed}")


def run_episodes(loaded: LoadedRun, episodes: int = 10, deterministic: bool = True, seed: Optional[int] = None,
                 record: bool = False) -> PlayResult:
    """Run ``episodes`` episodes; with ``record``, the first one's frames are kept in the result
    (``save_video`` writes them)."""

    if episodes < 1:
        raise PlayError(f"--episodes must be at least 1, got {episodes}")
    check_seed(seed)
    if record:
        prepare_rendering()
    seeds = episode_seeds(loaded, episodes, seed)
    seed_globals(int(loaded.config["seed"]) if seed is None else int(seed))  # the sampling stream, if any
    env = loaded.make_env(render=record)
    try:
        adapter = loaded.action_adapter(env.action_space)
        returns, lengths, frames = np.zeros(episodes), np.zeros(episodes, np.int64), []
        for j in range(episodes):
            obs, _ = env.reset(seed=seeds[j])
            recording = record and j == 0
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
    fps = int(env.metadata.get("render_fps") or 30)
    return PlayResult(returns, lengths, seeds, None, len(frames), frames, fps)


def save_video(result: PlayResult, video: Path) -> Path:
    """Write the recorded episode to ``video`` (.mp4 or .gif): encoded in a scratch directory,
    then written whole (``cli_common.write_output``), so a failure leaves no partial file and
    any earlier file at ``video`` as it was. RenderError (encoding) or OutputError (writing)."""

    video = Path(video)
    scratch = Path(tempfile.mkdtemp(prefix="ppo_research_video_"))
    try:
        encoded = write_video(result.recording, scratch / f"episode{video.suffix.lower()}", result.fps)
        write_output(video, encoded.read_bytes(), "video")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.video = video
    return video


def check_video(video: Path) -> None:
    """Fail before any episode (RenderError or OutputError, exit status 2) if ``video`` cannot be
    written: its format, the packages it needs, and the path itself."""

    check_writer(Path(video))
    check_output_file(video, "video")


def play(loaded: LoadedRun, episodes: int = 10, deterministic: bool = True, seed: Optional[int] = None,
         video: Optional[Path] = None) -> PlayResult:
    """Run ``episodes`` episodes; with ``video``, the first one is rendered to that file."""
    if video is not None:
        check_video(Path(video))
    result = run_episodes(loaded, episodes, deterministic, seed, record=video is not None)
    if video is not None:
        save_video(result, Path(video))
    return result


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

def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m ppo_research.play",
                           description="Run a trained policy: a table of episode returns, optionally a video.")
    parser.add_argument("run_dir", type=Path, help="a run directory (with checkpoints/)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint file (default: the newest usable one in <run_dir>/checkpoints)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    parser.add_argument("--seed", type=int, default=None,
                        help="a non-negative integer: episode seeds from this seed's evaluation streams (default: "
                             "the run's, i.e. the run's own evaluation episodes)")
    parser.add_argument("--video", type=Path, default=None, help="write the first episode to this .mp4 or .gif")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:

    args = parse_args(argv)
    try:
        if args.episodes < 1:  # checked before the run is loaded
            raise PlayError(f"--episodes must be at least 1, got {args.episodes}")
        check_seed(args.seed)
        if args.video is not None:
            check_video(args.video)
        loaded = load_run(args.run_dir, args.checkpoint)
        result = run_episodes(loaded, args.episodes, not args.stochastic, args.seed, record=args.video is not None)
    except (PlayError, CheckpointError, ConfigError, RenderError, OutputError) as err:
        error_line(str(err))
        return getattr(err, "status", EXIT_BAD_INPUT)
    failed = None
    if args.video is not None:
        try:
            save_video(result, args.video)
        except (RenderError, OutputError) as err:  # the episodes ran: their table is printed all the same
            failed = err
    print(format_table(loaded, result, not args.stochastic, args.seed), flush=True)
    if failed is not None:
        error_line(f"{failed} (the episodes' table is on stdout)")
        return getattr(failed, "status", EXIT_BAD_INPUT)
    return 0
