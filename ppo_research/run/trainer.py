"""The PPO training loop, over parts built by ``build``.

Per iteration, as in the paper's algorithm box:
  1. COLLECT     T steps from N envs with pi_old (theta_old <- theta first);
  2. ADVANTAGES  A_t and value targets R_t = A_t + V(s_t);
  3. UPDATE      K epochs of minibatch Adam on policy term + c_v * value loss - c_e * entropy;
  4. ADAPT       the loss's state (beta) to the measured KL;
  5. RECORD      metrics row, evaluation, checkpoint.

Stops: SIGINT/SIGTERM finish the current iteration, checkpoint and raise TrainingInterrupted
(a second signal exits at once); a non-finite loss or parameter raises NonFiniteError before
anything of that iteration is logged or checkpointed. See docs/reliability.md.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..algo.advantages import AdvantageRefresh
from ..algo.batch import Batch
from ..algo.inference import rollout_policy
from ..algo.optim import FlatAdam
from ..algo.update import PPOUpdate, UpdateSettings
from ..errors import NonFiniteError
from . import checkpoint
from .build import RunParts
from .collect import RolloutCollector
from .envs import TrainingEnvs
from .evaluation import Evaluator
from .record import RunRecord, explained_variance
from .seeds import env_seeds, restart_env_seeds
from .stops import StopRequests, TrainingInterrupted


def update_settings(algo) -> UpdateSettings:
    return UpdateSettings(num_epochs=algo.num_epochs, minibatch_size=algo.minibatch_size, vf_coef=algo.vf_coef,
                          ent_coef=algo.ent_coef, max_grad_norm=algo.max_grad_norm,
                          clip_value_loss=algo.clip_value_loss, normalize_advantage=algo.normalize_advantage,
                          target_kl=algo.target_kl, value_loss=algo.value_loss, huber_delta=algo.huber_delta,
                          recompute_advantages=algo.recompute_advantages)


class Trainer:
    def __init__(self, parts: RunParts, run_dir: Path,
                 on_evaluation: Optional[Callable[[int, int, float], None]] = None):
        self.parts, self.cfg, self.run_dir = parts, parts.config, Path(run_dir)
        self.on_evaluation = on_evaluation  # (iteration, global_step, eval_return); may raise to stop (pruning)
        cfg, algo = self.cfg, self.cfg.algo
        self.loss, self.estimator, self.policy, self.logger = parts.loss, parts.estimator, parts.network, parts.logger

        # Derived sizes, computed once.
        self.batch_size = algo.num_envs * algo.num_steps
        self.num_iterations = -(-cfg.total_timesteps // self.batch_size)  # ceil: train at least total_timesteps

        self.envs = TrainingEnvs(cfg.env, algo.num_envs, self.estimator.gamma, env_seeds(cfg.seed, algo.num_envs))
        self.optimizer = FlatAdam(self.policy, lr=algo.learning_rate, eps=algo.adam_eps,
                                  betas=(algo.adam_beta1, algo.adam_beta2))
        self.update = PPOUpdate(self.policy, self.loss, self.optimizer, update_settings(algo))
        self.actor = rollout_policy(self.policy)  # pi_old: the rollout's inference path
        self.collector = RolloutCollector(self.envs, self.policy, algo.num_steps)
        self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed, record=self.logger.wants_video)
        self.record = RunRecord(self.run_dir, self.logger, self.num_iterations, cfg.progress)
        self.stops = StopRequests()

        self.iteration = 0
        self.global_step = 0
        self.elapsed = 0.0  # training wall time, summed over resumed segments
        self.last_checkpoint: Optional[Path] = None

    # -- the algorithm -------------------------------------------------------------------------

    def train(self) -> dict:
        self.record.open()
        with self.stops.listening():
            while self.iteration < self.num_iterations:
                start = time.perf_counter()
                lr = self.schedule_learning_rate()

                self.actor.sync()                                                     # theta_old <- theta
                rollout, episodes = self.collector.collect(self.actor)                # 1. COLLECT
                collected = time.perf_counter()
                advantages = self.estimator(rollout.rewards, rollout.values, rollout.next_values,
                                            rollout.terminated, rollout.episode_end, rollout.valid)  # 2. ADVANTAGES
                refresh = (AdvantageRefresh(self.estimator, rollout, self.envs.obs, self.policy)
                           if self.cfg.algo.recompute_advantages else None)  # V_current each epoch
                try:
                    stats = self.update(Batch.from_rollout(rollout, advantages), refresh)  # 3. UPDATE
                except NonFiniteError as err:
                    raise err.at_iteration(self.iteration + 1) from None
                if not stats.get("update_skipped"):  # skipped: no valid sample, no step, no d
                    self.loss.observe_kl(stats["kl"], "iteration")                     # 4. ADAPT
                loss_values = self.loss.log_values()  # beta at the end of the iteration
                updated = time.perf_counter()

                self.iteration += 1                                                    # 5. RECORD
                self.global_step += self.batch_size
                row = self.record.row(self.iteration, self.global_step, stats, episodes, lr, loss_values,
                                      explained_variance(rollout, advantages))
                self.record_iteration(row, start, collected, updated)
        return self.record.summary(self.global_step, self.iteration, self.elapsed)

    def schedule_learning_rate(self) -> float:
        lr = self.cfg.algo.learning_rate
        if self.cfg.algo.anneal_lr:
            lr *= 1.0 - self.iteration / self.num_iterations
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # -- bookkeeping ---------------------------------------------------------------------------

    def record_iteration(self, row: dict, start: float, collected: float, updated: float) -> None:
        """Evaluate when due, write the row, checkpoint when due or asked to stop."""
        if self._due(self.cfg.eval.every):
            eval_start = time.perf_counter()
            row.update(self.evaluate())
            row["time_eval_s"] = time.perf_counter() - eval_start
        self.elapsed += time.perf_counter() - start  # end to end: rollout, update, evaluation
        row["time_s"] = self.elapsed
        row["sps"] = self.global_step / self.elapsed
        row["time_rollout_s"] = collected - start  # where this iteration's time went
        row["time_update_s"] = updated - collected
        self.record.write(row)
        stop = self.stops.signal  # read once: a signal may land between the two checks
        if self._due(self.cfg.checkpoint.every) or stop:
            self.save_checkpoint()
        if stop and self.iteration < self.num_iterations:
            raise TrainingInterrupted(stop, self.iteration, self.last_checkpoint)
        if "eval_return" in row and self.on_evaluation is not None:
            self.on_evaluation(self.iteration, self.global_step, row["eval_return"])

    def _due(self, every: int) -> bool:
        """Every ``every`` iterations (0 = never) and always after the last one."""
        return self.iteration == self.num_iterations or (every > 0 and self.iteration % every == 0)

    def evaluate(self) -> dict:
        returns = self.evaluator(self.policy, self.envs.obs_norm)
        if self.evaluator.frames:
            self.logger.log_video(np.stack(self.evaluator.frames), step=self.global_step, fps=self.evaluator.fps)
        return self.record.evaluation(returns)

    def close(self) -> None:
        self.record.close()
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
            **self.record.state_dict(),
            "rng": checkpoint.capture_global_rng(),
            "logger_run_id": self.logger.run_id,  # the resumed run continues the same wandb run
            "config": self.parts.resolved, "choices": dict(self.parts.choices),
            "run_id": self.parts.run_id,  # the run this checkpoint belongs to (run.json has it too)
        }

    def load_state_dict(self, state: dict) -> bool:
        """Continue from ``state``; returns whether the envs were restored exactly."""
        self.iteration, self.global_step = int(state["iteration"]), int(state["global_step"])
        self.elapsed = float(state["elapsed"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        self.record.load_state_dict(state)
        reseed = restart_env_seeds(self.cfg.seed, self.iteration, self.cfg.algo.num_envs)
        exact = self.envs.load_state_dict(state["envs"], reseed=reseed)
        checkpoint.restore_global_rng(state["rng"])  # last: nothing above may draw from it afterwards
        return exact

    def save_checkpoint(self) -> Path:
        self.last_checkpoint = checkpoint.save(self.run_dir, self.iteration, self.state_dict(),
                                               self.cfg.checkpoint.keep)
        return self.last_checkpoint
