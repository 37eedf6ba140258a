"""The PPO training loop.

Per iteration, as in the paper's algorithm box:
  1. collect T steps from N envs with pi_old;
  2. estimate advantages A_t and value targets R_t = A_t + V(s_t);
  3. K epochs of minibatch Adam on  policy term + c_v * value loss - c_e * entropy;
  4. let the loss adapt its state (beta) to the measured KL; log, evaluate, checkpoint.

Stops: SIGINT/SIGTERM finish the current iteration, checkpoint and raise TrainingInterrupted
(a second signal exits at once); a non-finite loss or parameter raises NonFiniteError before
anything of that iteration is logged or checkpointed. See docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import os
import dataclasses
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import checkpoint
from ..algo.advantages import AdvantageEstimator
from .config import Config
from .envs import TrainingEnvs
from .evaluation import Evaluator
from .loggers import MetricsFile, RunLogger, write_json_atomic
from ..algo.losses import PolicyBatch, PolicyLoss
from ..algo.networks import ActorCritic
from ..algo.optim import FlatAdam
from .rollout import Rollout, RolloutCollector


class NonFiniteError(FloatingPointError):
    """A loss term or a parameter became NaN/Inf; ``str()`` says where."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training cleanly at an iteration boundary, after a checkpoint.

    A KeyboardInterrupt, so ``except Exception`` (Hydra's job runner, optuna's trial runner)
    lets it through: a stop request ends a multirun or a study instead of becoming a failed job.
    """

    def __init__(self, signum: int, iteration: int, checkpoint: Path):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}; "
                         f"checkpoint {checkpoint}")


@dataclass
class Batch:
    """The valid (non-reset) transitions of a rollout, flattened to torch tensors."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    dist_params: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    @classmethod
    def from_rollout(cls, rollout: Rollout, advantages: np.ndarray) -> "Batch":
        keep = rollout.valid.reshape(-1)
        flat = lambda a: torch.from_numpy(a.reshape(keep.shape[0], *a.shape[2:])[keep])  # noqa: E731
        values = flat(rollout.values)
        adv = flat(advantages)
        return cls(flat(rollout.obs), flat(rollout.actions), flat(rollout.log_probs), flat(rollout.dist_params),
                   values, adv, adv + values)

    def __len__(self) -> int:
        return self.obs.shape[0]

    def permuted(self, order: torch.Tensor) -> "Batch":
        """The batch in a new order: gathered once per epoch, so minibatches are cheap slices."""
        return Batch(*(getattr(self, f.name)[order] for f in dataclasses.fields(self)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _minibatch_slices(n: int, size: int) -> list[slice]:
    """Split n samples into round(n / size) near-equal minibatches.

    n varies with the number of masked reset steps, so fixed-size chunks would leave a ragged
    last minibatch (possibly of one sample) that Adam would weigh like a full one.
    """
    count = max(1, round(n / size))
    edges = [round(i * n / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _k3(log_ratio: torch.Tensor) -> float:
    """The k3 estimate of KL(pi_old || pi): mean of (r - 1) - log r."""
    return ((log_ratio.exp() - 1.0) - log_ratio).mean().item()


def _standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else x - x.mean()


class Trainer:
    def __init__(self, cfg: Config, raw: DictConfig, run_dir: Path, logger: RunLogger, choices: dict[str, str],
                 on_evaluation: Optional[Callable[[int, int, float], None]] = None):
        self.cfg, self.run_dir, self.logger = cfg, Path(run_dir), logger
        self.on_evaluation = on_evaluation  # (iteration, global_step, eval_return); may raise to stop (pruning)
        algo = cfg.algo
        torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)

        # Derived sizes, computed once.
        self.batch_size = algo.num_envs * algo.num_steps
        self.num_iterations = -(-cfg.total_timesteps // self.batch_size)  # ceil: train at least total_timesteps

        self.loss: PolicyLoss = instantiate(raw.loss)
        self.estimator: AdvantageEstimator = instantiate(raw.advantage)
        self.envs = TrainingEnvs(cfg.env, algo.num_envs, self.estimator.gamma, cfg.seed)
        self.policy: ActorCritic = instantiate(raw.network, obs_space=self.envs.single_observation_space,
                                               action_space=self.envs.single_action_space)
        self.optimizer = FlatAdam(self.policy, lr=algo.learning_rate, eps=algo.adam_eps)
        self.collector = RolloutCollector(self.envs, self.policy, algo.num_steps)
        self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed, record=logger.wants_video)
        self.config_dict = OmegaConf.to_container(raw, resolve=True)
        self.choices = choices

        self.iteration = 0
        self.global_step = 0
        self.elapsed = 0.0  # training wall time, summed over resumed segments
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.last_eval: Optional[np.ndarray] = None
        self.stop_signal: Optional[int] = None  # set by SIGINT/SIGTERM; honoured between iterations
        self.last_checkpoint: Optional[Path] = None

    # -- the algorithm -------------------------------------------------------------------------

    def train(self) -> dict:
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl")
        cfg = self.cfg
        while self.iteration < self.num_iterations:
            start = time.perf_counter()
            lr = self._set_learning_rate()
            beta_used = self.loss.log_values()

            rollout, episodes = self.collector.collect()                                  # 1
            collected = time.perf_counter()
            advantages = self.estimator(rollout.rewards, rollout.values, rollout.next_values,
                                        rollout.terminated, rollout.episode_end, rollout.valid)  # 2
            batch = Batch.from_rollout(rollout, advantages)
            stats = self.update(batch)                                                    # 3
            self.loss.observe_kl(stats["kl"], "iteration")                               # 4
            updated = time.perf_counter()

            self.iteration += 1
            self.global_step += self.batch_size
            row = self._iteration_row(stats, episodes, lr, beta_used, rollout, advantages)
            if self._due(self.cfg.eval.every):
                eval_start = time.perf_counter()
                row.update(self._evaluate())
                row["time_eval_s"] = time.perf_counter() - eval_start
            self.elapsed += time.perf_counter() - start  # end to end: rollout, update, evaluation
            row["time_s"] = self.elapsed
            row["sps"] = self.global_step / self.elapsed
            row["time_rollout_s"] = collected - start  # where this iteration's time went
            row["time_update_s"] = updated - collected
            self.metrics.write(row)
            self.logger.log(row, step=self.global_step)
            if cfg.progress:
                self._print_progress(row)
            stop = self.stop_signal  # read once: a signal may land between the two checks
            if self._due(self.cfg.checkpoint.every) or stop:
                self.save_checkpoint()
            if stop and self.iteration < self.num_iterations:
                raise TrainingInterrupted(stop, self.iteration, self.last_checkpoint)
            if "eval_return" in row and self.on_evaluation is not None:
                self.on_evaluation(self.iteration, self.global_step, row["eval_return"])
        return self.finish()

    def update(self, batch: Batch) -> dict:
        """K epochs of minibatch Adam over the batch; returns the iteration's statistics."""
        algo = self.cfg.algo
        if algo.normalize_advantage == "batch":
            batch.advantages = _standardise(batch.advantages)
        minibatches = _minibatch_slices(len(batch), algo.minibatch_size)
        terms, log_ratios = [], []  # per minibatch, reduced once at the end (no sync per step)
        stop = False
        for epoch in range(algo.num_epochs):
            shuffled = batch.permuted(torch.randperm(len(batch)))
            for idx in minibatches:
                pb, value = self._policy_batch(shuffled, idx)
                if algo.target_kl is not None and _k3(pb.log_ratio.detach()) > 1.5 * algo.target_kl:
                    stop = True  # the policy has moved far enough: stop before this step
                    break
                policy_loss = self.loss(pb)
                value_loss = self._value_loss(value, shuffled.values[idx], shuffled.returns[idx])
                entropy = pb.dist.entropy().mean()
                total = policy_loss + algo.vf_coef * value_loss - algo.ent_coef * entropy
                if not torch.isfinite(total):
                    self._raise_non_finite(policy_loss, value_loss, entropy, epoch, len(terms))

                self.optimizer.zero_grad()
                total.backward()
                if algo.max_grad_norm is not None:
                    self.optimizer.clip_grad_norm(algo.max_grad_norm)
                self.optimizer.step()

                terms.append(torch.stack([policy_loss, value_loss, entropy]).detach())
                log_ratios.append(pb.log_ratio.detach())  # pre-step, as PPO reports them
                if self.loss.adapt_every == "minibatch":  # d after this step, on this minibatch
                    self.loss.observe_kl(self._measure(shuffled, idx)["kl"], "minibatch")
            if self.loss.adapt_every == "epoch":
                self.loss.observe_kl(self._measure(batch)["kl"], "epoch")
            if stop:
                break
        self._check_parameters()
        policy_loss, value_loss, entropy = torch.stack(terms).mean(0).tolist()
        log_ratio = torch.cat(log_ratios)
        clip_eps = self.loss.epsilon if self.loss.epsilon is not None else 0.2
        stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                 "clip_fraction": ((log_ratio.exp() - 1.0).abs() > clip_eps).float().mean().item(),
                 "epochs": epoch + 1}
        stats.update(self._measure(batch))
        return stats

    # -- pieces of the update ------------------------------------------------------------------

    def _policy_batch(self, batch: Batch, idx) -> tuple[PolicyBatch, torch.Tensor]:
        dist, value = self.policy(batch.obs[idx])
        advantages = batch.advantages[idx]
        if self.cfg.algo.normalize_advantage == "minibatch":
            advantages = _standardise(advantages)
        return self._with_old(batch, idx, dist, advantages), value

    def _with_old(self, batch: Batch, idx, dist, advantages) -> PolicyBatch:
        return PolicyBatch(log_prob=dist.log_prob(batch.actions[idx]), old_log_prob=batch.log_probs[idx],
                           advantages=advantages, dist=dist,
                           old_dist=self.policy.distribution_from_params(batch.dist_params[idx]))

    def _value_loss(self, value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        loss = (value - returns).pow(2)
        clip = self.cfg.algo.clip_value_loss
        if clip is not None:
            clipped = old_value + (value - old_value).clamp(-clip, clip)
            loss = torch.max(loss, (clipped - returns).pow(2))
        return 0.5 * loss.mean()

    @torch.no_grad()
    def _measure(self, batch: Batch, idx=slice(None)) -> dict:
        """Divergence of the current policy from pi_old (default: the whole batch, after the
        update): the d the beta rule acts on, the k3 estimate, and the ratio range."""
        pb = self._with_old(batch, idx, self.policy.distribution(batch.obs[idx]), batch.advantages[idx])
        return {"kl": self.loss.divergence(pb).mean().item(), "approx_kl_k3": _k3(pb.log_ratio),
                "ratio_min": pb.ratio.min().item(), "ratio_max": pb.ratio.max().item()}

    def _set_learning_rate(self) -> float:
        lr = self.cfg.algo.learning_rate
        if self.cfg.algo.anneal_lr:
            lr *= 1.0 - self.iteration / self.num_iterations
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _raise_non_finite(self, policy_loss, value_loss, entropy, epoch: int, minibatch: int):
        bad = [name for name, term in (("policy_loss", policy_loss), ("value_loss", value_loss),
                                       ("entropy", entropy)) if not torch.isfinite(term)]
        raise NonFiniteError(f"non-finite {', '.join(bad) or 'total loss'} at iteration {self.iteration + 1} "
                             f"(epoch {epoch + 1}, minibatch {minibatch + 1})")

    def _check_parameters(self) -> None:
        for name, p in self.policy.named_parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteError(f"non-finite parameter {name} after the update at iteration {self.iteration + 1}")

    # -- bookkeeping ---------------------------------------------------------------------------

    def _iteration_row(self, stats, episodes, lr, beta_used, rollout, advantages) -> dict:
        valid = rollout.valid
        returns = (advantages + rollout.values)[valid]
        var_returns = returns.var()
        explained = float("nan") if var_returns == 0 else 1.0 - (returns - rollout.values[valid]).var() / var_returns
        row = {"iteration": self.iteration, "global_step": self.global_step, "time_s": None, "sps": None}
        if episodes:
            self.recent_returns.extend(r for r, _ in episodes)
            row["episode_return"] = float(np.mean([r for r, _ in episodes]))
            row["episode_length"] = float(np.mean([n for _, n in episodes]))
            row["episodes"] = len(episodes)
        row.update({k: stats[k] for k in ("policy_loss", "value_loss", "entropy", "kl", "clip_fraction",
                                          "approx_kl_k3", "ratio_min", "ratio_max", "epochs")})
        row.update(beta_used)
        row["learning_rate"] = lr
        row["explained_variance"] = float(explained)
        return row

    def _due(self, every: int) -> bool:
        """Every ``every`` iterations (0 = never) and always after the last one."""
        return self.iteration == self.num_iterations or (every > 0 and self.iteration % every == 0)

    def _evaluate(self) -> dict:
        returns = self.evaluator(self.policy, self.envs.obs_norm)
        self.last_eval = returns
        if self.evaluator.frames:
            self.logger.log_video(np.stack(self.evaluator.frames), step=self.global_step, fps=self.evaluator.fps)
        return {"eval_return": float(returns.mean()), "eval_return_std": float(returns.std())}

    def _print_progress(self, row: dict) -> None:
        parts = [f"iter {row['iteration']}/{self.num_iterations}", f"step {row['global_step']}",
                 f"sps {row['sps']:.0f}"]
        if "episode_return" in row:
            parts.append(f"return {row['episode_return']:.1f}")
        if "eval_return" in row:
            parts.append(f"eval {row['eval_return']:.1f}")
        if "beta" in row:
            parts.append(f"beta {row['beta']:.3g}")
        parts.append(f"kl {row['kl']:.4f}")
        print(" | ".join(parts), file=sys.stderr, flush=True)

    def finish(self) -> dict:
        summary = {"global_step": self.global_step, "iterations": self.iteration,
                   "wall_time_s": self.elapsed, "sps": self.global_step / max(self.elapsed, 1e-9),
                   "train_return": float(np.mean(list(self.recent_returns)[-20:])) if self.recent_returns else None,
                   "train_return_last100": float(np.mean(self.recent_returns)) if self.recent_returns else None}
        if self.last_eval is not None:
            summary.update(eval_return=float(self.last_eval.mean()), eval_return_std=float(self.last_eval.std()),
                           eval_episodes=len(self.last_eval))
        write_json_atomic(self.run_dir / "summary.json", summary)
        self.logger.summary(summary)
        return summary

    def close(self) -> None:
        if hasattr(self, "metrics"):
            self.metrics.close()
        self.envs.close()
        self.evaluator.close()

    # -- checkpoints ---------------------------------------------------------------------------
    # Taken only between iterations, so the state below is all the run's future depends on:
    # resuming from it reproduces the uninterrupted run exactly (docs/reliability.md).

    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration, "global_step": self.global_step, "elapsed": self.elapsed,
            "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict(), "envs": self.envs.state_dict(),
            "recent_returns": list(self.recent_returns), "last_eval": self.last_eval,
            "rng": checkpoint.capture_global_rng(),
            "logger_run_id": self.logger.run_id,  # the resumed run continues the same wandb run
            "config": self.config_dict, "choices": dict(self.choices),
        }

    def load_state_dict(self, state: dict) -> bool:
        """Continue from ``state``; returns whether the envs were restored exactly."""
        self.iteration, self.global_step = int(state["iteration"]), int(state["global_step"])
        self.elapsed = float(state["elapsed"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])
        self.last_eval = state["last_eval"]
        exact = self.envs.load_state_dict(state["envs"], reseed=self.cfg.seed + self.iteration * self.cfg.algo.num_envs)
        checkpoint.restore_global_rng(state["rng"])  # last: nothing above may draw from it afterwards
        return exact

    def save_checkpoint(self) -> Path:
        self.last_checkpoint = checkpoint.save(self.run_dir, self.iteration, self.state_dict(),
                                               self.cfg.checkpoint.keep)
        return self.last_checkpoint

    # -- stop requests ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def stop_on_signals(self, signals=(signal.SIGINT, signal.SIGTERM)):
        """While active, the first SIGINT/SIGTERM asks training to stop after the current iteration
        (with a checkpoint); a second one exits at once with status 128 + signal number."""
        if threading.current_thread() is not threading.main_thread():
            yield  # Python delivers signals to the main thread only
            return

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self.stop_signal is not None:
                sys.stderr.write(f"\n{name} again: exiting at once, without a checkpoint\n")
                sys.stderr.flush()
                os._exit(128 + signum)
            self.stop_signal = signum
            sys.stderr.write(f"\n{name}: finishing the current iteration, then writing a checkpoint "
                             f"(send it again to exit at once)\n")
            sys.stderr.flush()

        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)
