"""The PPO training loop, over parts built by ``build``: one run, or a population of runs.

Per iteration, as in the paper's algorithm box:
  1. COLLECT     T steps from N envs with pi_old (theta_old <- theta first);
  2. ADVANTAGES  A_t and value targets R_t = A_t + V(s_t);
  3. UPDATE      K epochs of minibatch Adam on policy term + c_v * value loss - c_e * entropy;
  4. ADAPT       the loss's state (beta) to the measured KL;
  5. RECORD      metrics row, evaluation, checkpoint.

A population (docs/populations.md) is S runs of one config that differ only in their seed and
a few scalar hyperparameters. Each ``Member`` is a whole run - its own envs, normalisation,
random streams, loss state, records, checkpoints and run directory - and the members' networks
are trained by one stacked update (algo/stacking.py). A single run is a population of one.

Stops: SIGINT/SIGTERM finish the current iteration, checkpoint and raise TrainingInterrupted
(a second signal exits at once). A non-finite loss or parameter ends a member before anything
of that iteration is logged or checkpointed (a single run raises NonFiniteError); the other
members go on. See docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ...algo.advantages import AdvantageRefresh
from ...algo.batch import Batch, Rollout
from ...algo.inference import NumpyPolicy, StackedNumpyPolicy, rollout_policy
from ...algo.optim import FlatAdam
from ...algo.update import PPOUpdate, UpdateSettings
from ..envs import bookkeeping
from ..envs.shared_pool import share_one_pool
from ..envs.training import TrainingEnvs
from ..rundir import checkpoint
from ..signals import preemption
from ..signals.stops import StopRequests, TrainingInterrupted, sigint_deferred
from .build import RunParts
from .collect import LockstepCollector, RolloutCollector
from .evaluation import Evaluator
from .record import RunRecord, explained_variance
from .seeds import env_seeds, restart_env_seeds

EvaluationHook = Callable[[int, int, float], None]


def update_settings(algo) -> UpdateSettings:
    return UpdateSettings(num_epochs=algo.num_epochs, minibatch_size=algo.minibatch_size, vf_coef=algo.vf_coef,
                          ent_coef=algo.ent_coef, max_grad_norm=algo.max_grad_norm,
                          clip_value_loss=algo.clip_value_loss, normalize_advantage=algo.normalize_advantage,
                          target_kl=algo.target_kl, value_loss=algo.value_loss, huber_delta=algo.huber_delta,
                          recompute_advantages=algo.recompute_advantages, fast_paths=algo.fast_paths)


class Member:
    """One run: its parts, envs, evaluation, records and the fate of its training."""

    def __init__(self, parts: RunParts, run_dir: Path, on_evaluation: Optional[EvaluationHook],
                 num_iterations: int, progress: bool):
        self.parts, self.cfg, self.run_dir = parts, parts.config, Path(run_dir)
        self.on_evaluation = on_evaluation  # (iteration, global_step, eval_return); may raise to stop (pruning)
        cfg, algo = self.cfg, self.cfg.algo
        self.loss, self.estimator, self.policy, self.logger = parts.loss, parts.estimator, parts.network, parts.logger
        self.envs = TrainingEnvs(cfg.env, algo.num_envs, self.estimator.gamma, env_seeds(cfg.seed, algo.num_envs),
                                 compiled=algo.fast_paths and bookkeeping.worth_compiling(num_iterations * algo.num_steps))
        if self.envs.compiled:  # the compiled bookkeeping ready before the first rollout
            prepare_bookkeeping(self.envs.raw_obs_dtype)
        self.actor = rollout_policy(self.policy, fast=algo.fast_paths)  # pi_old: the rollout's inference path
        self.collector = RolloutCollector(self.envs, self.policy, algo.num_steps)
        self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed, record=self.logger.wants_video,
                                   fast=algo.fast_paths, deterministic=cfg.eval.deterministic)
        self.record = RunRecord(self.run_dir, self.logger, num_iterations, progress)
        self.last_checkpoint: Optional[Path] = None
        self.ended: Optional[BaseException] = None  # why it stopped before the end (divergence, pruning)
        self.summary: Optional[dict] = None


def prepare_bookkeeping(obs_dtype) -> None:
    """Compile (or load) the env bookkeeping's kernel for ``obs_dtype`` with Ctrl-C held back: a
    KeyboardInterrupt inside numba's compiler would be dropped (the run would go on) or leave the
    kernel half-built; the interrupt comes once the compile is done."""
    with sigint_deferred():
        bookkeeping.prepare(obs_dtype)


class MemberRandom:
    """Each member's torch random stream in a population: member k's draws (action noise,
    shuffling, a sampled entropy estimate's noise) come from its own generator, seeded as its solo run's global generator would be,
    so member k draws the very numbers its solo run would. Code that draws from the global
    generator does so inside ``use(k)``. Between members torch's global generator holds the
    population's own stream (run/loop/seeds.py). A single run uses the global generator itself."""

    def __init__(self, states: Sequence[torch.Tensor]):
        self.generators = []
        for state in states:
            self.generators.append(torch.Generator())
            self.generators[-1].set_state(state)

    @contextlib.contextmanager
    def use(self, k: int):
        outside = torch.get_rng_state()
        torch.set_rng_state(self.generators[k].get_state())
        try:
            yield
        finally:
            self.generators[k].set_state(torch.get_rng_state())
            torch.set_rng_state(outside)


@dataclass
class Estimated:
    """One member's iteration after step 2: what the update takes and what the record needs."""

    batch: Batch
    refresh: Optional[AdvantageRefresh] = None
    rollout: Optional[Rollout] = None
    episodes: list = field(default_factory=list)
    advantages: Optional[np.ndarray] = None


class Trainer:
    """``parts``/``run_dir``/``on_evaluation``: one run's, or lists of them (a population;
    ``rng_states``: each member's torch generator state after its build)."""

    def __init__(self, parts: Union[RunParts, Sequence[RunParts]], run_dir: Union[Path, Sequence[Path]],
                 on_evaluation: Union[None, EvaluationHook, Sequence[Optional[EvaluationHook]]] = None,
                 rng_states: Optional[Sequence[torch.Tensor]] = None):
        single = isinstance(parts, RunParts)
        parts = [parts] if single else list(parts)
        run_dirs = [run_dir] if single else list(run_dir)
        hooks = [on_evaluation] * len(parts) if on_evaluation is None or callable(on_evaluation) else list(on_evaluation)
        cfg, algo = parts[0].config, parts[0].config.algo

        # Derived sizes, computed once (members differ only in MEMBER_KEYS: run/loop/train.py).
        self.batch_size = algo.num_envs * algo.num_steps
        self.num_iterations = -(-cfg.total_timesteps // self.batch_size)  # ceil: train at least total_timesteps

        self.members = [Member(p, d, h, self.num_iterations, p.config.progress and k == 0)
                        for k, (p, d, h) in enumerate(zip(parts, run_dirs, hooks))]
        self.size = len(self.members)
        self.random = MemberRandom(rng_states) if self.size > 1 else None
        self.optimizer = FlatAdam([m.policy for m in self.members], lr=[m.cfg.algo.learning_rate for m in self.members],
                                  eps=algo.adam_eps, betas=(algo.adam_beta1, algo.adam_beta2))
        self.update = PPOUpdate([m.policy for m in self.members], [m.loss for m in self.members], self.optimizer,
                                update_settings(algo), ent_coefs=[m.cfg.algo.ent_coef for m in self.members],
                                generators=self.random.generators if self.random else None)
        self.stops = StopRequests()
        self.lockstep: Optional[LockstepCollector] = None  # a population's members collecting together

        self.iteration = 0
        self.global_step = 0
        self.elapsed = 0.0  # training wall time, summed over resumed segments

    @property
    def member(self) -> Member:
        """A single run's one member: its parts, envs and records (``trainer.member.policy``)."""
        return self.members[0]

    def member_random(self, k: int):
        return self.random.use(k) if self.random is not None else contextlib.nullcontext()

    @property
    def running(self) -> list[Member]:
        return [m for m in self.members if m.ended is None]

    # -- the algorithm -------------------------------------------------------------------------

    def train(self) -> dict:
        """Train a single run; returns its summary (raises what ended it early)."""
        result = self.train_members()[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def train_members(self) -> list[Union[dict, BaseException]]:
        """Train every member; per member its summary or what ended it (NonFiniteError, an
        ``on_evaluation`` exception). A stop signal raises TrainingInterrupted after every
        running member's checkpoint."""
        for m in self.members:
            m.record.open()
        warning = preemption.job_warning()  # a submitit job's time-limit/preemption signal, if it can requeue
        preemption.arm(warning)  # kept after the loop: the requeue happens once the run is closed
        with self.stops.listening(warning):
            while self.iteration < self.num_iterations and self.running:
                start = time.perf_counter()
                lrs = self.schedule()                                                  # 0. ANNEAL (lr, loss)
                taking_part = [m.ended is None for m in self.members]
                collected = self.collect(taking_part)                                  # 1. COLLECT
                estimated = self.estimate_advantages(collected)                        # 2. ADVANTAGES
                collect_end = time.perf_counter()
                stats = self.update([e.batch for e in estimated], [e.refresh for e in estimated],
                                    taking_part)                                        # 3. UPDATE
                adapted = self.adapt(stats, taking_part)                               # 4. ADAPT
                update_end = time.perf_counter()
                self.iteration += 1                                                    # 5. RECORD
                self.global_step += self.batch_size
                self.record_iteration(self.metrics_rows(adapted, estimated, lrs), start, collect_end, update_end)
        for m in self.running:
            m.summary = m.record.summary(self.global_step, self.iteration, self.elapsed)
        return [m.ended if m.ended is not None else m.summary for m in self.members]

    def estimate_advantages(self, collected: dict) -> list[Estimated]:
        """Per member: its rollout's advantages and targets as a batch (an empty one for a member
        not taking part), and how to re-estimate them with the current V (recompute_advantages)."""
        estimated = []
        for k, m in enumerate(self.members):
            if k not in collected:
                estimated.append(Estimated(Batch(*[torch.zeros(0)] * 7)))
                continue
            rollout, episodes = collected[k]
            advantages = m.estimator(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                                     rollout.episode_end, rollout.valid)
            refresh = AdvantageRefresh(m.estimator, rollout, m.envs.obs, m.policy) \
                if m.cfg.algo.recompute_advantages else None
            estimated.append(Estimated(Batch.from_rollout(rollout, advantages), refresh, rollout, episodes, advantages))
        return estimated

    def adapt(self, stats: list, taking_part: list[bool]) -> dict[int, tuple[dict, dict]]:
        """Each member's loss state (beta) to its measured KL; per member that goes on, its update
        statistics and loss values (beta at the end of the iteration). A member whose update
        diverged ends here."""
        adapted = {}
        for k, m in enumerate(self.members):
            if not taking_part[k]:
                continue
            if "failed" in stats[k]:
                m.ended = stats[k]["failed"].at_iteration(self.iteration + 1)
                continue
            if not stats[k].get("update_skipped"):  # skipped: no valid sample, no step, no d
                m.loss.observe_kl(stats[k]["kl"], "iteration")
            adapted[k] = (stats[k], m.loss.log_values())
        return adapted

    def metrics_rows(self, adapted: dict[int, tuple[dict, dict]], estimated: list[Estimated],
                     lrs: list[float]) -> dict[int, dict]:
        """Each recorded member's metrics row of this iteration (evaluation and timing follow)."""
        return {k: self.members[k].record.row(self.iteration, self.global_step, member_stats, estimated[k].episodes,
                                              lrs[k], loss_values,
                                              explained_variance(estimated[k].rollout, estimated[k].advantages))
                for k, (member_stats, loss_values) in adapted.items()}

    def collect(self, taking_part: list[bool]) -> dict:
        """Each running member's (rollout, finished episodes), acting with theta_old <- theta:
        in lock step when the members act through numpy mirrors, else one after another."""
        running = [k for k, part in enumerate(taking_part) if part]
        members = [self.members[k] for k in running]
        if len(running) > 1 and all(isinstance(m.actor, NumpyPolicy) for m in members):
            if self.lockstep is None and members[0].cfg.algo.fast_paths:  # EnvPool: the members' envs in one pool
                share_one_pool([m.envs.envs for m in members])
            if self.lockstep is None or self.lockstep.collectors != [m.collector for m in members]:
                self.lockstep = LockstepCollector([m.collector for m in members])  # (again when a member ended)
            actor = StackedNumpyPolicy([m.actor for m in members], [self.random.generators[k] for k in running])
            return dict(zip(running, self.lockstep.collect(actor)))
        collected = {}
        for k, m in zip(running, members):
            with self.member_random(k):
                m.actor.sync()
                collected[k] = m.collector.collect(m.actor)
        return collected

    def schedule(self) -> list[float]:
        """The iteration's learning rates (x alpha with ``algo.anneal_lr``); a loss that anneals
        its settings with alpha (``PolicyLoss.schedule``) is told alpha here too."""
        alpha = 1.0 - self.iteration / self.num_iterations  # the fraction of the run still to go
        for m in self.members:
            m.loss.schedule(alpha)
        lrs = [m.cfg.algo.learning_rate for m in self.members]
        if self.members[0].cfg.algo.anneal_lr:
            lrs = [lr * alpha for lr in lrs]
        self.optimizer.set_lr(lrs)
        return lrs

    # -- bookkeeping ---------------------------------------------------------------------------

    def record_iteration(self, rows: dict[int, dict], start: float, collected: float, updated: float) -> None:
        """Evaluate when due, write the rows, checkpoint when due or asked to stop."""
        evaluate = self._due(self.members[0].cfg.eval.every)
        eval_time = {}
        for k, row in rows.items():
            if evaluate:
                eval_start = time.perf_counter()
                row.update(self.evaluate(self.members[k]))
                eval_time[k] = time.perf_counter() - eval_start
        self.elapsed += time.perf_counter() - start  # end to end: rollout, update, evaluation
        for k, row in rows.items():
            if k in eval_time:
                row["time_eval_s"] = eval_time[k]
            row["time_s"] = self.elapsed
            row["sps"] = self.global_step / self.elapsed  # per member: the population's is size x this
            row["time_rollout_s"] = collected - start  # where this iteration's time went
            row["time_update_s"] = updated - collected
            self.members[k].record.write(row)
        stop = self.stops.signal  # read once: a signal may land between the two checks
        if self._due(self.members[0].cfg.checkpoint.every) or stop:
            self.save_checkpoint()
        if stop and self.iteration < self.num_iterations:
            raise TrainingInterrupted(stop, self.iteration, self.members[0].last_checkpoint)
        for k, row in rows.items():
            m = self.members[k]
            if "eval_return" in row and m.on_evaluation is not None and m.ended is None:
                try:
                    m.on_evaluation(self.iteration, self.global_step, row["eval_return"])
                except Exception as err:  # e.g. a pruned trial: this member ends, the others go on
                    m.ended = err

    def _due(self, every: int) -> bool:
        """Every ``every`` iterations (0 = never) and always after the last one."""
        return self.iteration == self.num_iterations or (every > 0 and self.iteration % every == 0)

    def evaluate(self, member: Optional[Member] = None) -> dict:
        m = member or self.members[0]
        returns = m.evaluator(m.policy, m.envs.obs_norm)
        if m.evaluator.frames:
            m.logger.log_video(np.stack(m.evaluator.frames), step=self.global_step, fps=m.evaluator.fps)
        return m.record.evaluation(returns)

    def close(self) -> None:
        for m in self.members:
            m.record.close()
            m.envs.close()
            m.evaluator.close()

    # -- checkpoints ---------------------------------------------------------------------------
    # Taken only between iterations, so the state below is all a run's future depends on:
    # resuming from it reproduces the uninterrupted run exactly (docs/reliability.md). Each
    # member's checkpoint is a complete single-run checkpoint in its own run directory.

    def member_state(self, k: int) -> dict:
        m = self.members[k]
        rng = checkpoint.capture_global_rng()
        if self.random is not None:
            rng["torch"] = self.random.generators[k].get_state()
        state = {
            "iteration": self.iteration, "global_step": self.global_step, "elapsed": self.elapsed,
            # cloned: the parameters are views of the population's buffer, which torch.save would write whole;
            # on the host, so that the checkpoint loads on any machine
            "policy": {name: t.cpu().clone() for name, t in m.policy.state_dict().items()},
            "optimizer": self.optimizer.member_state(k),
            "loss": m.loss.state_dict(), "envs": m.envs.state_dict(),
            **m.record.state_dict(),
            "rng": rng,
            "logger_run_id": m.logger.run_id,  # the resumed run continues the same wandb run
            "config": m.parts.resolved, "choices": dict(m.parts.choices),
            "run_id": m.parts.run_id,  # the run this checkpoint belongs to (run.json has it too)
        }
        if self.random is not None:
            state["population_rng"] = torch.get_rng_state()
        return state

    def state_dict(self) -> dict:
        """A single run's checkpoint state."""
        return self.member_state(0)

    def load_state_dict(self, state: Union[dict, Sequence[dict]]) -> Union[bool, list[bool]]:
        """Continue from a checkpoint state per member (one dict for a single run); returns
        whether each member's envs were restored exactly. All members must be at one iteration."""
        states = [state] if isinstance(state, dict) else list(state)
        iterations = {int(s["iteration"]) for s in states}
        if len(iterations) != 1:
            raise ValueError(f"members' checkpoints are at different iterations {sorted(iterations)}")
        first = states[0]
        self.iteration, self.global_step = int(first["iteration"]), int(first["global_step"])
        self.elapsed = float(first["elapsed"])
        exact = []
        for k, (m, s) in enumerate(zip(self.members, states)):
            m.policy.load_state_dict(s["policy"])
            self.optimizer.load_member_state(k, s["optimizer"])
            m.loss.load_state_dict(s["loss"])
            m.record.load_state_dict(s)
            reseed = restart_env_seeds(m.cfg.seed, self.iteration, m.cfg.algo.num_envs)
            exact.append(m.envs.load_state_dict(s["envs"], reseed=reseed))
            if self.random is not None:
                self.random.generators[k].set_state(s["rng"]["torch"])
        # last: nothing above may draw from them afterwards
        checkpoint.restore_global_rng(first["rng"])
        if self.random is not None:
            torch.set_rng_state(first["population_rng"])
        return exact[0] if isinstance(state, dict) else exact

    def restore_random(self, states: Sequence[dict]) -> None:
        """Put the generators back as the checkpoints hold them (after a tracker's start-up drew)."""
        checkpoint.restore_global_rng(states[0]["rng"])
        if self.random is not None:
            torch.set_rng_state(states[0]["population_rng"])

    def save_checkpoint(self) -> Path:
        # Every member's checkpoint is written before any is pruned: a kill in between leaves each
        # member holding this iteration or the previous one, so the members can always resume
        # together from one iteration, whatever checkpoint.keep says.
        live = [(k, m) for k, m in enumerate(self.members) if m.ended is None]
        for k, m in live:
            m.last_checkpoint = checkpoint.save(m.run_dir, self.iteration, self.member_state(k), keep=None)
        for _, m in live:
            checkpoint.prune(m.run_dir, m.cfg.checkpoint.keep)
        return self.members[0].last_checkpoint
