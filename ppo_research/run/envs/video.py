"""Rendering episodes to video files, headless.

What rendering needs (the ``video`` extra: ``pip install -e ".[video]"``):

    classic control (CartPole, Pendulum, ...)   pygame, drawing into an off-screen surface
    MuJoCo (Hopper, HalfCheetah, ...)           an off-screen OpenGL context: MUJOCO_GL=egl
                                                (Debian: libegl1 + libegl-mesa0) or osmesa
                                                (libosmesa6)
    .mp4 files                                  imageio + imageio-ffmpeg (ships its own ffmpeg)
    .gif files                                  imageio (+ pillow)

``prepare_rendering`` picks headless settings before an env is made (the GL backend is read
when mujoco is first imported), and every missing piece surfaces as a ``RenderError`` with a
single line naming what to install, instead of a backend's traceback or SDL's own messages.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ...errors import described

# imageio (the `video` extra) is imported where a video is written.

#: Container formats by file extension.
VIDEO_SUFFIXES = (".mp4", ".gif")
EXTRA_HINT = 'pip install -e ".[video]"'


class RenderError(RuntimeError):
    """Rendering or writing a video is not possible here; ``str()`` is one line saying why."""


def prepare_rendering() -> None:
    """Headless defaults, only where the user set nothing: MuJoCo renders through EGL when no
    display is attached, and pygame draws into memory with no window, no audio and no banner
    (SDL's video probe otherwise prints an 'error:' about XDG_RUNTIME_DIR on headless machines)."""
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless:
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    gl = os.environ.get("MUJOCO_GL")
    if gl in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", gl)  # PyOpenGL must agree with mujoco's context
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def check_writer(path: Path) -> None:
    """Fail now, not after the episode, if ``path``'s format cannot be written."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise RenderError(f"cannot write video {path}: the extension must be one of {', '.join(VIDEO_SUFFIXES)}")
    try:
        import imageio  # noqa: F401
    except ImportError:
        raise RenderError(f"writing {path} needs the imageio package: {EXTRA_HINT}") from None
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError:
            raise RenderError(f"writing an MP4 needs the imageio-ffmpeg package, which is not installed: "
                              f"{EXTRA_HINT}, or write a .gif") from None
        try:
            imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError as err:  # the wheel's ffmpeg binary is missing
            raise RenderError(f"writing an MP4 needs imageio-ffmpeg's ffmpeg binary ({described(err)}): "
                              f"{EXTRA_HINT}, or write a .gif") from None
    if not Path(path).parent.exists():
        raise RenderError(f"cannot write video {path}: directory {Path(path).parent} does not exist")


def render_frame(env) -> np.ndarray:
    """One ``rgb_array`` frame of ``env``, or a RenderError saying what is missing."""
    try:
        with warnings.catch_warnings():  # backends warn on their way to failing (GLFW: "no display")
            warnings.simplefilter("ignore")
            frame = env.render()
    except Exception as err:  # DependencyNotInstalled (pygame), mujoco.FatalError, GL errors, ...
        raise RenderError(_render_failure(env, err)) from None
    if frame is None or np.ndim(frame) != 3:
        raise RenderError(f"{env.spec.id if env.spec else env} returned no rgb_array frame "
                          f"(got {type(frame).__name__}); was it made with render_mode='rgb_array'?")
    return np.asarray(frame)


def _render_failure(env, err: BaseException) -> str:
    env_id = env.spec.id if env.spec else type(env.unwrapped).__name__
    module = type(env.unwrapped).__module__
    what = described(err)
    if "mujoco" in module:
        gl = os.environ.get("MUJOCO_GL", "glfw (mujoco's default, needs a display)")
        return (f"cannot render {env_id} off-screen with MUJOCO_GL={gl} ({what}); headless rendering needs "
                "MUJOCO_GL=egl with the system package libegl1 (Debian: apt-get install libegl1 libegl-mesa0) "
                "or MUJOCO_GL=osmesa with libosmesa6")
    if "pygame" in what.lower() or "classic_control" in module or "box2d" in module:
        return f"cannot render {env_id} ({what}); classic-control rendering needs pygame: {EXTRA_HINT}"
    return f"cannot render {env_id}: {what}"


def write_video(frames: list[np.ndarray] | np.ndarray, path: Path, fps: int) -> Path:
    """Write ``frames`` (time, height, width, 3) as MP4 (H.264, yuv420p) or GIF by extension."""
    import imageio.v2 as imageio

    path = Path(path)
    check_writer(path)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or len(frames) == 0:
        raise RenderError(f"no frames to write to {path}")
    try:
        if path.suffix.lower() == ".mp4":
            # yuv420p (what players expect) needs even sides: pad by one pixel where odd
            pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
            if pad_h or pad_w:
                frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            imageio.mimwrite(path, frames, fps=fps, codec="libx264", quality=7, macro_block_size=1,
                             ffmpeg_log_level="error")
        else:
            imageio.mimwrite(path, frames, duration=1000.0 / fps, loop=0)
    except Exception as err:
        raise RenderError(f"cannot write video {path}: {described(err)}") from None
    return path


