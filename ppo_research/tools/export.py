"""``python -m ppo_research.export <run_dir> --format onnx|torch --out FILE``: a standalone policy.

The exported file is the run's deterministic policy as one function of the raw observation,
loadable without ppo_research:

    action = adapt(mode(pi(clip((obs - mean) / sqrt(var + 1e-8), -c, c))))

with the checkpoint's frozen observation statistics (``mean``, ``var``; only when the run
normalised observations), the clip ``c = env.clip_obs``, the Gaussian mean or the most likely
discrete action, and ``adapt`` the run's ``env.action_mode`` (clip to the Box bounds, or map
[-1, 1] onto them): the action is in the env's units, ready for ``env.step``. Input: ``obs``,
float32 [batch, obs_dim] (any batch size); output: ``action``, float32 [batch, action_dim] for
Box spaces, int64 [batch] for Discrete ones.

    onnx    an ONNX model (``torch.onnx.export`` of the ``torch.export`` program); run it with
            ``onnxruntime.InferenceSession(path).run(None, {"obs": obs})[0]``. The run's
            description is in the model's metadata_props (key ``ppo_research``, JSON).
    torch   a ``torch.export`` program (``torch.export.save``, a ``.pt2`` file); run it with
            ``torch.export.load(path).module()(obs)``. The description is the extra file
            ``ppo_research.json``.

The batch axis is named ``batch`` in the ONNX graph (input and output ``dim_param``).

After writing, the file is loaded back and checked against ``play``'s deterministic policy on
``--verify`` observations (default 1,000, at most MAX_VERIFY = 100,000, from the run's own
evaluation episodes, half of them perturbed); the largest difference is printed.

``--out`` is checked before the run is loaded (``cli_common.check_output_file``: a directory, a
missing parent, a parent that is a file, a read-only or pseudo file system are one ``error:``
line, exit status 2), and the file is written whole (``cli_common.write_output``): a failure
while writing (disk full) is one ``error:`` line, exit status 4, and leaves any earlier file at
``--out`` as it was.
"""
from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import json
import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ..errors import EXIT_BAD_INPUT, CheckpointError, ConfigError
from ..run.envs.atari import is_image
from .cli_common import OneLineParser, OutputError, check_output_file, error_line, write_output
from .play import LoadedRun, PlayError, episode_seed, load_run

# onnx, onnxruntime and torch.export (the `export` extra, slow imports) are imported where they are used.

FORMATS = ("onnx", "torch")
#: --verify's largest N: 100,000 CartPole observations add about 6 s and 160 MB to an export,
#: Humanoid's (376 floats) take 150 MB on their own; more would check little the first thousand miss.
MAX_VERIFY = 100_000
BATCH_AXIS = "batch"  # the ONNX graph's name for the batch dimension
METADATA_KEY = "ppo_research"  # ONNX metadata_props key; the torch program's extra file is METADATA_KEY + ".json"
EXTRA_HINT = 'pip install -e ".[export]"'


class StandalonePolicy(nn.Module):
    """The deterministic policy of a loaded run, observation in, env action out."""

    def __init__(self, loaded: LoadedRun, action_space):
        super().__init__()

        env = loaded.env_config
        self.network = copy.deepcopy(loaded.network).eval().requires_grad_(False)
        self.obs_shape = tuple(loaded.obs_space.shape)
        self.normalize = bool(env.normalize_obs)
        self.clip_obs = None if env.clip_obs is None else float(env.clip_obs)
        stats = loaded.obs_norm.stats
        # The statistics in float64 as the run keeps them: the graph normalises in double
        # precision, then casts to float32 for the network, exactly as the run's normaliser does.
        self.register_buffer("obs_mean", torch.as_tensor(np.asarray(stats.mean, np.float64)))
        self.register_buffer("obs_std", torch.as_tensor(np.sqrt(np.asarray(stats.var, np.float64) + 1e-8)))
        self.box = isinstance(action_space, gym.spaces.Box)
        self.action_mode = env.action_mode if self.box else "none"
        if self.box:
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.normalize:
            x = (x.to(torch.float64) - self.obs_mean) / self.obs_std
            if self.clip_obs is not None:
                x = torch.clamp(x, -self.clip_obs, self.clip_obs)
        action = self.network.distribution(x.to(torch.float32)).mode()
        if self.action_mode == "clip":
            action = torch.minimum(torch.maximum(action, self.low), self.high)
        elif self.action_mode == "rescale":
            action = self.low + 0.5 * (torch.clamp(action, -1.0, 1.0) + 1.0) * (self.high - self.low)
        return action


def describe(loaded: LoadedRun, action_space, fmt: str) -> dict:
    """What the file is: enough to use it without the run directory."""

    space = ({"type": "Box", "shape": list(action_space.shape), "low": action_space.low.tolist(),
              "high": action_space.high.tolist()} if isinstance(action_space, gym.spaces.Box)
             else {"type": "Discrete", "n": int(action_space.n)})
    shape = [int(n) for n in loaded.obs_space.shape]
    flat = {"obs_dim": shape[0]} if len(shape) == 1 else {}
    return {"format": fmt, "env_id": loaded.env_config.id, **flat, "obs_shape": shape,
            "input": {"name": "obs", "dtype": "float32", "shape": ["batch", *shape]},
            "output": {"name": "action", "dtype": "float32" if space["type"] == "Box" else "int64"},
            "action_space": space, "action_mode": loaded.env_config.action_mode,
            "normalize_obs": bool(loaded.env_config.normalize_obs), "clip_obs": loaded.env_config.clip_obs,
            "run_dir": str(loaded.run_dir), "checkpoint": loaded.checkpoint.name,
            "iteration": loaded.state.get("iteration"), "global_step": loaded.state.get("global_step"),
            "choices": loaded.choices}


def export_program(module: StandalonePolicy) -> "torch.export.ExportedProgram":
    from torch.export import Dim, export

    example = torch.zeros(2, *module.obs_shape, dtype=torch.float32)
    return export(module, (example,), dynamic_shapes={"obs": {0: Dim("batch", min=1)}}, strict=False)


def check_out(fmt: str, out: Path) -> None:
    """Refuse ``out`` before anything is built (PlayError or OutputError, exit status 2)."""
    if fmt not in FORMATS:
        raise PlayError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "torch" and out.suffix != ".pt2":
        raise PlayError(f"cannot write {out}: torch.export programs are files ending in .pt2")
    check_output_file(out)


def check_verify(count: int) -> None:
    if not 0 <= count <= MAX_VERIFY:
        raise PlayError(f"--verify must be between 0 and {MAX_VERIFY:,} observations, got {count}")


def name_batch_axis(model, name: str = BATCH_AXIS) -> None:
    """Rename the batch dimension of the ONNX graph (torch.export's symbol, e.g. ``s79``) to
    ``name`` wherever it appears: inputs, outputs and intermediate shapes."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    symbol = dim.dim_param
    if not symbol or symbol == name:
        return
    for value in itertools.chain(model.graph.input, model.graph.output, model.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param == symbol:
                d.dim_param = name


def serialize(loaded: LoadedRun, fmt: str) -> tuple[bytes, dict]:
    """The standalone policy of ``loaded`` in ``fmt`` as the bytes of its file, and its description."""
    if fmt not in FORMATS:
        raise PlayError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require("onnx", "onnxscript")
    env = loaded.make_env()
    try:
        action_space = env.action_space
    finally:
        env.close()
    module = StandalonePolicy(loaded, action_space)
    meta = describe(loaded, action_space, fmt)
    program = export_program(module)
    if fmt == "torch":
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
        return buffer.getvalue(), meta
    import onnx

    with _quiet_exporter():
        onnx_program = torch.onnx.export(program, f=None, input_names=["obs"], output_names=["action"],
                                         dynamo=True, external_data=False, verbose=False)
    model = onnx_program.model_proto
    name_batch_axis(model)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    model.doc_string = (f"ppo_research deterministic policy for {meta['env_id']} from {meta['checkpoint']}: "
                        f"obs float32 [batch, {', '.join(map(str, meta['obs_shape']))}] -> action in the env's units")
    onnx.checker.check_model(model)
    return model.SerializeToString(), meta


def write(loaded: LoadedRun, fmt: str, out: Path) -> tuple[Path, dict]:
    """Write the standalone policy of ``loaded`` in ``fmt`` to ``out``; returns (path, description).
    ``out`` is checked before the export is built; the file is written whole."""
    out = Path(out)
    check_out(fmt, out)
    data, meta = serialize(loaded, fmt)
    write_output(out, data)
    return out, meta


class _quiet_exporter:
    """The ONNX exporter logs a line per torchvision op it skips and a few deprecation warnings;
    none of them concern a policy MLP. Real errors still raise."""

    def __enter__(self):
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return self

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)
        return False


def _require(*modules: str) -> None:

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PlayError(f"--format onnx needs {', '.join(missing)}: {EXTRA_HINT}")


# -- loading an exported file back (the way a user without ppo_research would) ------------------

def load_exported(path: Path, fmt: str):
    """A callable float32 [batch, *obs_shape] -> numpy actions, from the file alone."""
    if fmt == "torch":
        module = torch.export.load(str(path)).module()
        return lambda obs: module(torch.as_tensor(obs, dtype=torch.float32)).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda obs: session.run(None, {"obs": np.asarray(obs, np.float32)})[0]


def sample_observations(loaded: LoadedRun, count: int, seed: Optional[int] = None) -> np.ndarray:
    """``count`` float32 observations: states the policy visits on the run's evaluation episodes
    (deterministic, fresh episodes until enough), every second one perturbed by noise of the
    observation scale, so normalisation clipping and out-of-distribution inputs are covered."""
    rng = np.random.default_rng(0 if seed is None else seed)
    env = loaded.make_env()
    adapter = loaded.action_adapter(env.action_space)
    observed: list[np.ndarray] = []
    try:
        for episode in itertools.count():
            obs, _ = env.reset(seed=episode_seed(loaded, episode, seed))
            done = False
            while not done and len(observed) < count:
                observed.append(np.asarray(obs, np.float32))
                action = loaded.policy_actions(obs[None])[0]
                obs, _, terminated, truncated, _ = env.step(adapter(action))
                done = terminated or truncated
            if len(observed) >= count:
                break
    finally:
        env.close()
    obs = np.stack(observed).astype(np.float32)
    scale = obs.std(0) + 1e-3
    obs[1::2] += (rng.standard_normal(obs[1::2].shape) * 3 * scale).astype(np.float32)
    if is_image(loaded.obs_space):  # perturbed frames are still frames: whole values in 0..255
        obs = np.clip(np.rint(obs), 0, 255).astype(np.float32)
    return obs


def play_actions(loaded: LoadedRun, obs: np.ndarray) -> np.ndarray:
    """``play``'s deterministic actions in the env's units, for a batch of observations."""
    env = loaded.make_env()
    try:
        adapter = loaded.action_adapter(env.action_space)
    finally:
        env.close()
    return adapter(loaded.policy_actions(obs, deterministic=True))


def verify(loaded: LoadedRun, path: Path, fmt: str, count: int) -> Optional[float]:
    """Largest |exported - play| over ``count`` observations; None when onnxruntime is missing."""
    if fmt == "onnx":

        if importlib.util.find_spec("onnxruntime") is None:
            return None
    obs = sample_observations(loaded, count)
    expected = play_actions(loaded, obs)
    got = load_exported(path, fmt)(obs)
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))


# -- command line --------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]]):
    parser = OneLineParser(prog="python -m ppo_research.export",
                           description="Write a run's deterministic policy as a standalone ONNX model or "
                                       "torch.export program (normalisation and action bounds folded in).")
    parser.add_argument("run_dir", type=Path, help="a run directory (with checkpoints/)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (onnxruntime) or torch (torch.export)")
    parser.add_argument("--out", required=True, type=Path, help="file to write")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the newest usable checkpoint")
    parser.add_argument("--verify", type=int, default=1000, metavar="N",
                        help=f"check the written file against play's policy on N observations, 0 to {MAX_VERIFY:,} "
                             "(0: skip; default 1,000)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        check_verify(args.verify)  # all of --out and --verify before the run is loaded
        check_out(args.format, args.out)
        loaded = load_run(args.run_dir, args.checkpoint)
        path, meta = write(loaded, args.format, args.out)
        checked = args.verify and path.is_file()  # a device (/dev/stdout) cannot be read back
        diff = verify(loaded, path, args.format, args.verify) if checked else None
    except (PlayError, CheckpointError, ConfigError, OutputError) as err:
        error_line(str(err))
        return getattr(err, "status", EXIT_BAD_INPUT)
    space = meta["action_space"]
    out_desc = f"float32 [batch, {space['shape'][0]}]" if space["type"] == "Box" else f"int64 [batch] in 0..{space['n'] - 1}"
    size = f", {path.stat().st_size / 1024:.1f} KB" if path.is_file() else ""
    print(f"wrote {path} ({args.format}{size}): {meta['env_id']} policy from "
          f"{meta['checkpoint']} (global step {meta['global_step']}); obs float32 "
          f"[batch, {', '.join(map(str, meta['obs_shape']))}] -> "
          f"action {out_desc}")
    if args.verify:
        if not checked:
            print(f"not checked: {path} is not a regular file, so it cannot be loaded back")
        elif diff is None:
            print("not checked: onnxruntime is not installed (" + EXTRA_HINT + ")")
        else:
            print(f"checked against play's deterministic policy on {args.verify} observations: max |diff| = {diff:.3g}")
    return 0
