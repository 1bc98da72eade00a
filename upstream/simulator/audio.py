"""Audio: speech synthesis, WAV/MP3 writing, and reading back what was said.

Speech is espeak-ng when it is installed, a synthesized signal otherwise, always
PCM16 mono at 24 kHz. The spoken text is embedded in the file (a WAV LIST/INFO
comment, or an ID3 TXXX frame in MP3) and raw PCM is remembered by its hash, so
transcribing the simulator's own speech returns exactly that text; other audio
gets an honest description with its real duration.
"""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import struct
import subprocess
import tempfile
import wave
import zlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

RATE = 24_000
COMMENT_PREFIX = "mira-simulator:"


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    languages: tuple[str, ...]
    gender: str
    espeak: str
    espeak_ru: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "voice",
            "name": self.name,
            "language": list(self.languages),
            "gender": self.gender,
            "preview_url": None,
        }


VOICES = (
    Voice("aria", "Aria", ("ru", "en"), "female", "en-us+f3", "ru+f3"),
    Voice("orion", "Orion", ("en",), "male", "en-us+m3", "ru+m3"),
    Voice("nova", "Nova", ("en",), "female", "en-gb+f4", "ru+f4"),
    Voice("sol", "Sol", ("en", "es"), "male", "en+m1", "ru+m1"),
    Voice("luna", "Luna", ("ru",), "female", "ru+f2", "ru+f2"),
)
VOICE_IDS = tuple(v.id for v in VOICES)


def voice(voice_id: str) -> Voice:
    return next(v for v in VOICES if v.id == voice_id)


def is_russian(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    cyrillic = sum(1 for c in letters if "\u0400" <= c <= "\u04ff")
    return bool(letters) and cyrillic * 2 >= len(letters)


# --- synthesis ------------------------------------------------------------------------


def resample(samples: array, source_rate: int, target_rate: int = RATE) -> array:
    """Linear-interpolation resampling of PCM16 samples."""
    if source_rate == target_rate or not samples:
        return samples
    count = int(len(samples) * target_rate / source_rate)
    step = source_rate / target_rate
    last = len(samples) - 1
    out = array("h", bytes(2 * count))
    for i in range(count):
        position = i * step
        left = int(position)
        right = left + 1 if left < last else last
        fraction = position - left
        out[i] = int(samples[left] + (samples[right] - samples[left]) * fraction)
    return out


# Speech longer than this (seconds) is resampled by ffmpeg when it is installed.
LONG_SPEECH_SECONDS = 10


def _espeak(text: str, voice_name: str, speed: float) -> array | None:
    program = shutil.which("espeak-ng")
    if program is None:
        return None
    words_per_minute = str(max(80, min(450, int(170 * speed))))
    try:
        result = subprocess.run(  # noqa: S603 - fixed program, text goes through stdin
            [program, "--stdin", "--stdout", "-v", voice_name, "-s", words_per_minute],
            input=text.encode(),
            capture_output=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    data = result.stdout
    # espeak-ng streams its WAV with placeholder sizes, so read the chunks by hand.
    at = data.find(b"fmt ")
    start = data.find(b"data")
    if at < 0 or start < 0:
        return None
    source_rate = struct.unpack_from("<I", data, at + 12)[0]
    payload = data[start + 8 :]
    samples = array("h", payload[: len(payload) // 2 * 2])
    if len(samples) > LONG_SPEECH_SECONDS * source_rate:
        # Long speech is resampled by ffmpeg where it is installed: the loop below takes
        # seconds for minutes of audio, and a process of its own costs a few milliseconds.
        faster = _ffmpeg_resample(payload, source_rate)
        if faster is not None:
            return faster
    return resample(samples, source_rate)


def _ffmpeg_resample(pcm: bytes, source_rate: int) -> array | None:
    program = shutil.which("ffmpeg")
    if program is None:
        return None
    command = [program, "-hide_banner", "-loglevel", "error", "-f", "s16le",
               "-ar", str(source_rate), "-ac", "1", "-i", "pipe:0",
               "-f", "s16le", "-ar", str(RATE), "-ac", "1", "pipe:1"]  # fmt: skip
    try:
        result = subprocess.run(  # noqa: S603 - fixed program and arguments
            command, input=pcm[: len(pcm) // 2 * 2], capture_output=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return array("h", result.stdout[: len(result.stdout) // 2 * 2])


def tone_speech(text: str, speed: float = 1.0) -> array:
    """A speech-like signal (one pitched syllable per word) when no synthesizer exists."""
    out = array("h")
    gap = array("h", bytes(2 * int(0.07 * RATE / speed)))
    for word in text.split() or ["..."]:
        pitch = 140 + zlib.crc32(word.encode()) % 120
        length = int((0.08 + 0.06 * min(len(word), 12)) * RATE / speed)
        ramp = 0.01 * RATE
        for i in range(length):
            t = i / RATE
            envelope = min(1.0, i / ramp, (length - i) / ramp)
            value = (
                0.6 * math.sin(2 * math.pi * pitch * t)
                + 0.3 * math.sin(4 * math.pi * pitch * t)
                + 0.1 * math.sin(6 * math.pi * pitch * t)
            )
            out.append(int(9000 * envelope * value))
        out.extend(gap)
    return out


def synthesize(text: str, voice_id: str = "aria", speed: float = 1.0, *, espeak: bool) -> bytes:
    """PCM16 mono 24 kHz speech for text."""
    chosen = voice(voice_id)
    samples = None
    if espeak:
        name = chosen.espeak_ru if is_russian(text) else chosen.espeak
        samples = _espeak(text, name, speed)
    if samples is None:
        samples = tone_speech(text, speed)
    return samples.tobytes()


# --- containers -----------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    padded = payload + (b"\0" if len(payload) % 2 else b"")
    return kind + struct.pack("<I", len(payload)) + padded


def wav_bytes(pcm: bytes, rate: int = RATE, comment: str | None = None) -> bytes:
    """A WAV file of PCM16 mono, with the comment in a LIST/INFO chunk."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    chunks = _chunk(b"fmt ", fmt)
    if comment is not None:
        info = _chunk(b"ICMT", (COMMENT_PREFIX + comment).encode() + b"\0")
        chunks += _chunk(b"LIST", b"INFO" + info)
    chunks += _chunk(b"data", pcm)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _syncsafe(value: int) -> bytes:
    return bytes(((value >> 21) & 0x7F, (value >> 14) & 0x7F, (value >> 7) & 0x7F, value & 0x7F))


def id3_tag(comment: str) -> bytes:
    """An ID3v2.4 tag holding one TXXX frame with the comment (UTF-8)."""
    payload = b"\x03" + COMMENT_PREFIX.encode() + b"\0" + comment.encode()
    frame = b"TXXX" + _syncsafe(len(payload)) + b"\0\0" + payload
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def mp3_bytes(pcm: bytes, rate: int = RATE, comment: str | None = None) -> bytes | None:
    """MP3 through ffmpeg, or None when ffmpeg cannot make one."""
    program = shutil.which("ffmpeg")
    if program is None:
        return None
    command = [
        program, "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(rate),
        "-ac", "1", "-i", "pipe:0", "-codec:a", "libmp3lame", "-b:a", "64k",
        "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "pipe:1",
    ]  # fmt: skip
    try:
        result = subprocess.run(  # noqa: S603 - fixed program and arguments
            command, input=pcm, capture_output=True, timeout=120, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (id3_tag(comment) if comment is not None else b"") + result.stdout


def encode(
    pcm: bytes, response_format: str, comment: str | None, *, ffmpeg: bool
) -> tuple[bytes, str]:
    """Audio bytes and their content type; MP3 falls back to WAV without ffmpeg."""
    if comment is not None:
        SPEECH_MEMORY.remember_sound(pcm, comment)
    if response_format == "pcm":
        SPEECH_MEMORY.remember(pcm, comment)
        return pcm, "audio/pcm"
    if response_format == "mp3" and ffmpeg:
        mp3 = mp3_bytes(pcm, RATE, comment)
        if mp3 is not None:
            return mp3, "audio/mpeg"
    return wav_bytes(pcm, RATE, comment), "audio/wav"


# --- reading audio back -----------------------------------------------------------------


# Loudness is compared in frames of this length: long enough to be cheap, short enough to
# keep the rhythm of syllables, which survives a microphone, resampling and re-encoding.
FRAME_SECONDS = 0.025
# How alike two loudness envelopes must be (their correlation) to be the same speech.
SAME_SPEECH = 0.8
# Longer utterances are not compared (the comparison's cost grows with the square).
MAX_RECOGNIZED_SECONDS = 20


def envelope(samples: array, rate: int) -> list[float]:
    """The loudness of PCM16 samples, frame by frame: each frame's mean amplitude. (The
    comparison is a correlation, which a gain or a steady hiss, adding about the same to
    every frame, does not change.)"""
    step = max(1, int(rate * FRAME_SECONDS))
    return [
        sum(map(abs, samples[start : start + step])) / step
        for start in range(0, len(samples) - step + 1, step)
    ]


def _correlation(heard: list[float], spoken: list[float]) -> float:
    """How well `heard` matches `spoken` played in a loop (as a fake microphone plays a
    file), at the best offset: Pearson's correlation, -1 to 1."""
    count = len(heard)
    mean = sum(heard) / count
    centred = [value - mean for value in heard]
    norm = math.sqrt(sum(value * value for value in centred))
    if norm == 0:
        return 0.0
    period = len(spoken)
    best = -1.0
    for offset in range(period):
        window = [spoken[(offset + i) % period] for i in range(count)]
        window_mean = sum(window) / count
        window = [value - window_mean for value in window]
        window_norm = math.sqrt(sum(value * value for value in window))
        if window_norm:
            score = sum(a * b for a, b in zip(centred, window, strict=True)) / (norm * window_norm)
            best = max(best, score)
    return best


class SpeechMemory:
    """What this process said: the text of the raw PCM it synthesized, by hash (PCM has no
    metadata), and of every utterance by its loudness envelope, so that its own speech
    played back through a microphone is recognised (the simulator hears nothing else)."""

    def __init__(self, size: int = 256, heard: int = 32) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()
        self._envelopes: OrderedDict[str, list[float]] = OrderedDict()
        self._size = size
        self._heard = heard

    def remember(self, pcm: bytes, text: str | None) -> None:
        if text is None:
            return
        self._items[hashlib.sha256(pcm).hexdigest()] = text
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def remember_sound(self, pcm: bytes, text: str) -> None:
        if len(pcm) > 2 * RATE * MAX_RECOGNIZED_SECONDS:
            return  # too long to be compared (see recognize)
        self._envelopes[text] = envelope(array("h", pcm[: len(pcm) // 2 * 2]), RATE)
        self._envelopes.move_to_end(text)
        while len(self._envelopes) > self._heard:
            self._envelopes.popitem(last=False)

    def recall(self, pcm: bytes) -> str | None:
        return self._items.get(hashlib.sha256(pcm).hexdigest())

    def recognize(self, samples: array, rate: int) -> str | None:
        """The text of the remembered utterance these samples sound like, if one does:
        at least half a second of it, alike above SAME_SPEECH."""
        heard = envelope(samples[: rate * MAX_RECOGNIZED_SECONDS * 2], rate)
        minimum = 0.5 / FRAME_SECONDS
        best, text = SAME_SPEECH, None
        for spoken_text, spoken in reversed(self._envelopes.items()):
            # One loop and a half of the utterance is enough to tell.
            part = heard[: len(spoken) * 3 // 2]
            if len(part) < minimum or len(spoken) > MAX_RECOGNIZED_SECONDS / FRAME_SECONDS:
                continue
            score = _correlation(part, spoken)
            if score > best:
                best, text = score, spoken_text
        return text


SPEECH_MEMORY = SpeechMemory()


def _riff_chunks(data: bytes) -> dict[bytes, bytes]:
    chunks: dict[bytes, bytes] = {}
    at = 12
    while at + 8 <= len(data):
        kind = data[at : at + 4]
        size = struct.unpack_from("<I", data, at + 4)[0]
        chunks.setdefault(kind, data[at + 8 : at + 8 + size])
        at += 8 + size + (size % 2)
    return chunks


def embedded_text(data: bytes) -> str | None:
    """The text the simulator embedded in a WAV or MP3 file, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        listing = _riff_chunks(data).get(b"LIST", b"")
        if listing[:4] == b"INFO":
            at = 4
            while at + 8 <= len(listing):
                kind = listing[at : at + 4]
                size = struct.unpack_from("<I", listing, at + 4)[0]
                value = listing[at + 8 : at + 8 + size].rstrip(b"\0").decode("utf-8", "replace")
                if kind == b"ICMT" and value.startswith(COMMENT_PREFIX):
                    return value[len(COMMENT_PREFIX) :]
                at += 8 + size + (size % 2)
        return None
    marker = b"\x03" + COMMENT_PREFIX.encode() + b"\0"
    if data[:3] == b"ID3":
        end = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
        tag = data[10:end]
        at = tag.find(marker)
        if at >= 0:
            size = sum(b << (7 * (3 - i)) for i, b in enumerate(tag[at - 6 : at - 2]))
            return tag[at + len(marker) : at + size].decode("utf-8", "replace")
    return None


def wav_duration(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as reader:
            return reader.getnframes() / reader.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError, struct.error):
        chunks = _riff_chunks(data)
        fmt, payload = chunks.get(b"fmt "), chunks.get(b"data")
        if not fmt or payload is None or len(fmt) < 16:
            return None
        byte_rate = struct.unpack_from("<I", fmt, 8)[0]
        return len(payload) / byte_rate if byte_rate else None


def probe_duration(data: bytes) -> float | None:
    """Any container's duration through ffprobe, when it is installed."""
    program = shutil.which("ffprobe")
    if program is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audio"
        path.write_bytes(data)
        command = [program, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]
        try:
            result = subprocess.run(  # noqa: S603 - fixed program, our own temporary file
                [*command, str(path)], capture_output=True, timeout=30, check=True
            )
            return float(result.stdout.strip())
        except (OSError, subprocess.SubprocessError, ValueError):
            return None


def duration(data: bytes, content_type: str = "") -> float | None:
    """Seconds of audio in data; raw PCM is taken as PCM16 mono 24 kHz."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return wav_duration(data)
    if content_type in ("audio/pcm", "audio/l16", "audio/raw"):
        return len(data) / (2 * RATE)
    return probe_duration(data)


def samples_of(data: bytes, content_type: str = "", limit: int = 60) -> tuple[array, int] | None:
    """PCM16 mono samples of audio and their rate: WAV read here (the first channel),
    raw PCM as PCM16 mono 24 kHz, anything else decoded by ffmpeg when installed (its
    first `limit` seconds)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            with wave.open(io.BytesIO(data)) as reader:
                if reader.getsampwidth() != 2:
                    return None
                channels, rate = reader.getnchannels(), reader.getframerate()
                samples = array("h", reader.readframes(reader.getnframes()))
        except (wave.Error, EOFError, struct.error):
            return None
        return (samples[::channels] if channels > 1 else samples), rate
    if content_type in ("audio/pcm", "audio/l16", "audio/raw"):
        return array("h", data[: len(data) // 2 * 2]), RATE
    program = shutil.which("ffmpeg")
    if program is None:
        return None
    command = [program, "-hide_banner", "-loglevel", "error", "-i", "pipe:0",
               "-t", str(limit), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"]  # fmt: skip
    try:
        result = subprocess.run(  # noqa: S603 - fixed program and arguments
            command, input=data, capture_output=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return array("h", result.stdout[: len(result.stdout) // 2 * 2]), RATE


def recognize(data: bytes, content_type: str = "") -> str | None:
    """The text of the simulator's own speech in this audio, if it is that."""
    decoded = samples_of(data, content_type)
    return SPEECH_MEMORY.recognize(*decoded) if decoded is not None else None


def describe(seconds: float | None, content_type: str) -> str:
    if seconds is None:
        return f"(simulated transcription of {content_type or 'audio'} audio)"
    return f"(simulated transcription of {seconds:.1f} seconds of audio)"
