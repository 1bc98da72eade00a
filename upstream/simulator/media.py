"""Music and video files for finished jobs: real, playable, deterministic from the prompt."""

from __future__ import annotations

import functools
import hashlib
import io
import math
import shutil
import subprocess
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from upstream.simulator import audio
from upstream.simulator.images import caption, draw_prompt, palette

MUSIC_RATE = 22_050
_SCALE = (0, 2, 4, 7, 9, 12, 14, 16)  # a major pentatonic over two octaves


def render_music(prompt: str, seconds: float, *, mp3: bool) -> tuple[bytes, str, str]:
    """(file bytes, content type, extension) of a tune made from the prompt.

    One bar is synthesized and repeated, so long tracks stay cheap to make.
    """
    digest = hashlib.sha256(prompt.encode()).digest()
    root = 196.0 * 2 ** ((digest[0] % 7) / 12)
    tempo = 80 + digest[1] % 60
    beat = int(MUSIC_RATE * 60 / tempo)
    bar = array("h")
    for step in range(8):
        degree = _SCALE[digest[2 + step] % len(_SCALE)]
        pitch = root * 2 ** (degree / 12)
        bass = root / 2 * 2 ** (_SCALE[digest[10 + step // 4] % 4] / 12)
        length = beat // 2
        for i in range(length):
            t = i / MUSIC_RATE
            decay = math.exp(-3.0 * i / length)
            value = 0.55 * decay * math.sin(2 * math.pi * pitch * t)
            value += 0.25 * math.sin(2 * math.pi * bass * t)
            bar.append(int(12000 * value))
    total = int(seconds * MUSIC_RATE)
    repeats = total // len(bar) + 1
    pcm = (bar * repeats)[:total].tobytes()
    if mp3:
        data = audio.mp3_bytes(pcm, MUSIC_RATE, prompt)
        if data is not None:
            return data, "audio/mpeg", "mp3"
    return audio.wav_bytes(pcm, MUSIC_RATE, prompt), "audio/wav", "wav"


@dataclass(frozen=True)
class VideoFormat:
    width: int
    height: int


def video_format(aspect_ratio: str, resolution: str) -> VideoFormat:
    short = 1080 if resolution == "1080p" else 720
    long = short * 16 // 9
    if aspect_ratio == "9:16":
        return VideoFormat(short, long)
    if aspect_ratio == "1:1":
        return VideoFormat(short, short)
    return VideoFormat(long, short)


@functools.cache
def _video_encoder() -> str | None:
    program = shutil.which("ffmpeg")
    if program is None:
        return None
    try:
        listing = subprocess.run(  # noqa: S603 - fixed program and arguments
            [program, "-hide_banner", "-encoders"], capture_output=True, timeout=30, check=True
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None
    for encoder in ("libx264", "mpeg4"):
        if f" {encoder} " in listing:
            return encoder
    return None


def _frames(
    prompt: str, size: VideoFormat, count: int, first_frame: bytes | None
) -> list[Image.Image]:
    if first_frame is not None:
        with Image.open(io.BytesIO(first_frame)) as picture:
            background = picture.convert("RGBA").resize((size.width, size.height))
        caption(background, prompt)
    else:
        background = draw_prompt(prompt, size.width, size.height)
    color = palette(f"ball:{prompt}", 1)[0] + (255,)
    radius = min(size.width, size.height) // 10
    frames = []
    for index in range(count):
        frame = background.copy()
        phase = index / max(1, count - 1)
        x = radius + phase * (size.width - 2 * radius)
        y = size.height / 2 + math.sin(phase * 2 * math.pi) * size.height / 4
        ImageDraw.Draw(frame).ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
        frames.append(frame.convert("RGB"))
    return frames


def render_video(
    prompt: str,
    seconds: int,
    size: VideoFormat,
    *,
    ffmpeg: bool,
    first_frame: bytes | None = None,
    fps: int = 12,
) -> tuple[bytes, str, str]:
    """(file bytes, content type, extension): MP4 through ffmpeg, else animated WebP."""
    encoder = _video_encoder() if ffmpeg else None
    program = shutil.which("ffmpeg")
    if encoder is not None and program is not None:
        frames = _frames(prompt, size, seconds * fps, first_frame)
        raw = b"".join(frame.tobytes() for frame in frames)
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "video.mp4"
            command = [
                program, "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
                "-pix_fmt", "rgb24", "-s", f"{size.width}x{size.height}", "-r", str(fps),
                "-i", "pipe:0", "-c:v", encoder, "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(target),
            ]  # fmt: skip
            if encoder == "libx264":
                command[-1:-1] = ["-preset", "ultrafast"]
            try:
                subprocess.run(  # noqa: S603 - fixed program, our own temporary file
                    command, input=raw, capture_output=True, timeout=300, check=True
                )
                return target.read_bytes(), "video/mp4", "mp4"
            except (OSError, subprocess.SubprocessError):
                pass
    # Without ffmpeg: an animated WebP (a RIFF container), smaller and at a lower rate.
    scale = min(1.0, 480 / max(size.width, size.height))
    small = VideoFormat(int(size.width * scale), int(size.height * scale))
    slow = max(1, fps // 2)
    frames = _frames(prompt, small, seconds * slow, first_frame)
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=int(1000 / slow),
        loop=0,
        quality=60,
    )
    return buffer.getvalue(), "image/webp", "webp"
