"""Decode any common audio/video container into float32 samples at the model's rate.

PyAV (bundled FFmpeg) demuxes and decodes; we convert each frame to float ourselves, average channels
ourselves (FFmpeg's downmix is 3 dB louder than a plain mean) and resample with soxr's streaming resampler,
so a whole-file decode and a chunked decode give the same samples. Against faster-whisper's decode_audio
(FFmpeg's swr to s16 mono) the shared clips correlate > 0.9999; clips already at 16 kHz differ by its s16
rounding only (1.5e-5), resampled ones by up to 0.02 (soxr HQ vs swr defaults); loudness is the same.
Every failure becomes an `AudioError` whose message says why (empty, not media, truncated or corrupt,
no audio stream, NaN/infinite or absurdly large samples).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import BinaryIO

import av
import numpy as np
import soxr

from cliptext.errors import ErrorCode
from inference.pcm import check_sample_values
from inference.types import AudioError

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | np.ndarray

# Demuxers that open an image or text, not a recording: refused as "not an audio or video file".
# Several accept any bytes by file extension alone (garbage named .bin, .txt, .nfo, .idf, .cdg, .jpg...)
# and show them as a video track, which would read as "a video without audio". Text art: tty, bin, xbin,
# adf, idf; images: image2 (and every *_pipe), the single-image ones below; cdg holds karaoke graphics
# only (its sound is a separate file); data is raw bytes without any codec.
_NOT_MEDIA_FORMATS = frozenset(
    {
        "image2",
        "gif",
        "apng",
        "ico",
        "webp",
        "jpegxl_anim",
        "alias_pix",
        "brender_pix",
        "msp",
        "fits",
        "frm",
        "txd",
        "tty",
        "bin",
        "xbin",
        "adf",
        "idf",
        "cdg",
        "data",
    }
)
# Decoder errors tolerated (skipped like faster-whisper does) before the data is called corrupt.
_MAX_BAD_PACKET_RATIO = 0.2
# Decoded audio shorter than the container's declared duration by more than this is called truncated.
_TRUNCATION_TOLERANCE = (0.10, 0.5)  # (fraction of declared, seconds), the larger of the two
_IO_BUFFER = 1 << 16
# PyAV before 19 decodes a container's tags strictly unless told otherwise (a tag in a bad encoding then
# fails the whole open); 19 (Python >= 3.12 only) dropped the argument and decodes them with surrogateescape
_METADATA_ERRORS = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
_GROUP_SECONDS = 1.0
_OGG_PAGE_HEADER = 27  # "OggS", version, flags, granule, serial, sequence, CRC, segment count
_OGG_BEGINS_STREAM = 0x02  # the flag of a stream's first page (BOS)
# Bounds on the scan of a chain's pages (a few seconds of Python at most) and on its links (each opened
# on its own): an upload of tiny pages or links is no way to hold a server's thread for minutes
_MAX_OGG_PAGES = 1_000_000  # a 2-hour FLAC-in-Ogg recording has about 150,000
_MAX_OGG_LINKS = 1000
_MAX_ARRAY_CHANNELS = 64  # more rows than this: the array is surely [n, channels]
# Below this no recording carries speech (telephony is 8 kHz, FLV's lowest 5.5 kHz); a header that says
# 7 Hz turns 32 KB into 40 minutes of audio for the model to chew on, so it is refused as corrupt.
MIN_SAMPLE_RATE = 4000
# Above this no recording format goes (FFmpeg's highest is 768 kHz); a header saying 2 GHz resampled a
# whole file into no samples at all, an empty transcript instead of an error.
MAX_SAMPLE_RATE = 768_000
# Containers whose length FFmpeg guesses from the first frames' bitrate when no header states it (ADTS
# AAC never states it; MP3 does in a Xing/Info or VBRI frame): a guess is no ground to call a file cut.
_GUESSED_LENGTH_FORMATS = frozenset({"aac", "mp3"})
# Containers whose length, as FFmpeg states it, runs from timestamp 0 to the last one, not from the first
_LENGTH_IS_LAST_TIMESTAMP = frozenset({"matroska,webm", "ogg"})
_MP3_LENGTH_TAGS = (b"Xing", b"Info", b"VBRI")
# A WAV data size meaning "unknown" (written by programs that stream to a pipe), not a real length
_WAV_UNKNOWN_SIZE = 0x7FFFF000
# A video's audio track that starts this much after its picture starts with silence, so that transcript
# times are the video's (subtitles in sync); less is encoder delay and the like, left alone.
_MIN_LEADING_GAP = 0.1
# A hole of this much or more in an audio track's timestamps is filled with silence, so that the sound
# after it keeps its times (shorter ones are rounding, and are left alone: the line drawn for a late
# start too); where the headers state no length to keep the filling inside, a hole longer than
# _MAX_UNSTATED_GAP is taken for a broken timestamp
_MIN_GAP = _MIN_LEADING_GAP
_MAX_UNSTATED_GAP = 60.0
_DEFAULT_TRACK = av.stream.Disposition.default
# Audio tracks that go beside the programme, not the programme itself
_ASIDE_TRACKS = (
    av.stream.Disposition.comment
    | av.stream.Disposition.visual_impaired
    | av.stream.Disposition.hearing_impaired
    | av.stream.Disposition.descriptions
)


@dataclass(frozen=True)
class MediaInfo:
    """What a cheap look at the headers says; `duration` is None when the container does not tell."""

    duration: float | None
    has_audio: bool
    has_video: bool
    sample_rate: int | None
    channels: int | None
    container: str


def decode_audio(
    source: AudioSource, sampling_rate: int = 16000, channels: str = "mix", max_seconds: float | None = None
) -> np.ndarray:
    """Decode `source` to float32 at `sampling_rate`: 1-D for channels="mix", [C, n] for "split".

    A numpy array is taken as already at `sampling_rate` (1-D mono or [C, n]) and only validated. Of
    several audio tracks, the one a player plays is decoded (flagged default, not a commentary); holes
    in its timestamps are filled with silence, so that the times are the file's.
    `max_seconds` stops decoding with `AudioError(AUDIO_TOO_LONG)` as soon as more audio than that was
    decoded: headers can lie about the length, so the limit is checked on the samples themselves.
    """
    blocks = list(_iter_resampled(source, sampling_rate, channels, max_seconds))
    if channels == "mix":
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((1, 0), np.float32)


def iter_audio_chunks(
    source: AudioSource,
    sampling_rate: int = 16000,
    chunk_seconds: float = 30.0,
    channels: str = "mix",
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive float32 chunks of `chunk_seconds` (the last one shorter) without decoding it all.

    The samples are the same as `decode_audio` gives (one soxr stream over the whole file). A truncated
    or corrupt file may raise `AudioError` after some chunks were yielded, and so does audio longer than
    `max_seconds` (AUDIO_TOO_LONG, once that much was decoded).
    """
    size = int(round(chunk_seconds * sampling_rate))
    if size <= 0:
        raise ValueError("chunk_seconds must be positive")
    pending: list[np.ndarray] = []
    n_pending = 0
    for block in _iter_resampled(source, sampling_rate, channels, max_seconds):
        pending.append(block)
        n_pending += block.shape[-1]
        if n_pending < size:
            continue
        buffer = np.concatenate(pending, axis=-1)
        n_full = buffer.shape[-1] // size * size
        for start in range(0, n_full, size):
            yield buffer[..., start : start + size]
        pending = [buffer[..., n_full:]]
        n_pending = pending[0].shape[-1]
    if n_pending:
        yield np.concatenate(pending, axis=-1)


def probe_media(source: AudioSource) -> MediaInfo:
    """Read only the headers: is this audio/video, how long, which rate and channels.

    Raises `AudioError(AUDIO_DECODE_ERROR)` for anything that is not an audio or video file; a video without
    audio is returned with has_audio=False (the caller decides whether that is an error).
    """
    if isinstance(source, np.ndarray):
        audio = _validate_array(source, "split")
        return MediaInfo(None, True, False, None, audio.shape[0], "numpy")
    with _source_file(source) as (file, seekable):
        links = _ogg_links(file) if seekable else []
        with _open_file(file, seekable) as opened:
            container = opened.container
            audio_streams, has_video = _classify_streams(container)
            stream = audio_streams[0] if audio_streams else None
            if stream is not None:
                _check_rate(stream.codec_context.sample_rate or 0)
            info = MediaInfo(
                duration=_declared_duration(container, stream),
                has_audio=stream is not None,
                has_video=has_video,
                sample_rate=stream.codec_context.sample_rate or None if stream else None,
                channels=stream.codec_context.channels or None if stream else None,
                container=container.format.name,
            )
        if links:  # FFmpeg states one link's length: the recording is all of them
            info = replace(info, duration=_chained_duration(file, links))
        return info


def _chained_duration(file: BinaryIO, links: list[tuple[int, int | None]]) -> float | None:
    """The lengths of a chained Ogg file's links added up; None when one of them does not state it."""
    total = 0.0
    for index, (start, end) in enumerate(links):
        try:
            with _open_file(_OffsetView(file, start, end), True) as link:
                streams, _ = _classify_streams(link.container)
                seconds = _declared_duration(link.container, streams[0] if streams else None)
        except AudioError as error:
            if _ends_the_chain(error, index, 0):
                return total
            raise
        if seconds is None:
            return None
        total += seconds
    return total


def _ends_the_chain(error: AudioError, index: int, samples_of_link: int) -> bool:
    """Whether a link that failed is where the recording stops: a link after the first that could not be
    opened or held no audio at all (a capture cut in the next link's headers). What came before it is
    the recording, as FFmpeg, reading one container, would have given it; a link cut mid-audio is
    truncated, as any file is."""
    return index > 0 and samples_of_link == 0 and error.code == ErrorCode.AUDIO_DECODE_ERROR


def _iter_resampled(
    source: AudioSource, sampling_rate: int, channels: str, max_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """Blocks of float32 at `sampling_rate`, 1-D ("mix") or [C, n] ("split"), of any length."""
    if channels not in ("mix", "split"):
        raise ValueError("channels must be 'mix' or 'split'")
    if isinstance(source, np.ndarray):
        audio = _validate_array(source, channels)
        if max_seconds is not None and audio.shape[-1] > max_seconds * sampling_rate:
            raise _too_long(max_seconds)
        if audio.shape[-1]:
            yield audio
        return
    with _source_file(source) as (file, seekable):
        links = _ogg_links(file) if seekable else []
        if not links:
            with _open_file(file, seekable) as opened:
                yield from _iter_stream(opened, sampling_rate, channels, max_seconds)
            return
        # chained Ogg: each link is a recording of its own (its own headers, rate and channels),
        # decoded one after the other as if the file were their concatenation
        decoded = 0
        width = None
        for index, (start, end) in enumerate(links):
            remaining = None if max_seconds is None else max_seconds - decoded / sampling_rate
            before, changed = decoded, None
            try:
                with _open_file(_OffsetView(file, start, end), True) as opened:
                    for block in _iter_stream(opened, sampling_rate, channels, remaining):
                        if channels == "split" and width is not None and block.shape[0] != width:
                            changed = block.shape[0]
                            break
                        width = block.shape[0] if channels == "split" else None
                        decoded += block.shape[-1]
                        yield block
            except AudioError as error:
                if error.code == ErrorCode.AUDIO_TOO_LONG and max_seconds is not None:
                    raise _too_long(max_seconds) from None  # the whole file's limit, not what was left
                if _ends_the_chain(error, index, decoded - before):
                    return
                raise
            if changed is not None:
                raise _channels_changed(width, changed)


def _iter_stream(
    opened: _Opened, sampling_rate: int, channels: str, max_seconds: float | None
) -> Iterator[np.ndarray]:
    """`_iter_resampled` for one opened container: its main audio track (see `_classify_streams`)."""
    audio_streams, has_video = _classify_streams(opened.container)
    if not audio_streams:
        if has_video:
            raise AudioError(ErrorCode.NO_AUDIO_STREAM, "the file has a video track but no audio track")
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "the file has no audio track")
    stream = audio_streams[0]
    _check_rate(stream.codec_context.sample_rate or 0)
    gap = _leading_gap(opened.container, stream) if has_video else 0.0
    if gap:
        if max_seconds is not None and gap > max_seconds:
            raise _too_long(max_seconds)
        max_seconds = None if max_seconds is None else max_seconds - gap
        width = 1 if channels == "mix" else max(1, stream.codec_context.channels or 1)
        silence = np.zeros((width, int(round(gap * sampling_rate))), np.float32)
        yield silence[0] if channels == "mix" else silence
    resampler: _Resampler | None = None
    n_channels = None
    for rate, samples in _grouped(_decode_frames(opened, stream, max_seconds)):
        check_sample_values(samples, "the decoded audio")  # before the mean: inf - inf is NaN
        if n_channels is None:
            n_channels = samples.shape[0]
        elif channels == "split" and samples.shape[0] != n_channels:
            raise _channels_changed(n_channels, samples.shape[0])
        if channels == "mix":
            samples = samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]
        if resampler is None or resampler.in_rate != rate:
            if resampler is not None:
                yield from resampler.flush()
            mono = samples.ndim == 1
            resampler = _Resampler(rate, sampling_rate, 1 if mono else samples.shape[0], mono)
        yield from resampler.push(samples)
    if resampler is None:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR, "no audio could be decoded (corrupt or truncated data)"
        )
    yield from resampler.flush()


class _Resampler:
    """soxr's streaming resampler (HQ), or a pass-through when the rates already match."""

    def __init__(self, in_rate: int, out_rate: int, n_channels: int, mono: bool):
        self.in_rate = in_rate
        self._n_channels = n_channels
        self._mono = mono
        self._stream = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, n_channels, dtype="float32", quality="HQ")

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        if self._stream is None:
            yield samples
            return
        out = self._stream.resample_chunk(np.ascontiguousarray(samples.T))
        if out.shape[0]:
            yield np.ascontiguousarray(out.T)

    def flush(self) -> Iterator[np.ndarray]:
        if self._stream is None:
            return
        empty = np.zeros(0 if self._mono else (0, self._n_channels), np.float32)
        out = self._stream.resample_chunk(empty, last=True)
        if out.shape[0]:
            yield np.ascontiguousarray(out.T)


def _validate_array(audio: np.ndarray, channels: str) -> np.ndarray:
    if not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR, f"audio arrays must be floating point, not {audio.dtype}"
        )
    if audio.ndim not in (1, 2) or (audio.ndim == 2 and audio.shape[0] == 0):
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR, f"audio arrays must be [n] or [channels, n], not {audio.shape}"
        )
    if audio.ndim == 2 and audio.shape[0] > _MAX_ARRAY_CHANNELS:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"audio arrays must be [channels, n]: {audio.shape} has too many channels (is it [n, channels]?)",
        )
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused just below
        audio = np.asarray(audio, dtype=np.float32)
    check_sample_values(audio, "the audio array")
    if channels == "mix":
        return audio.mean(axis=0, dtype=np.float32) if audio.ndim == 2 else audio
    return audio if audio.ndim == 2 else audio[np.newaxis]


@contextmanager
def _source_file(source: AudioSource) -> Iterator[tuple[BinaryIO, bool]]:
    """(a file object holding only the recording's bytes, whether it can seek): our own file object, so
    that PyAV reads only local bytes (no URLs, no playlists)."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "the file is empty")
        file, owned = io.BytesIO(source), True
    elif isinstance(source, str | os.PathLike):
        try:
            file, owned = open(source, "rb"), True  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"no such file: {os.fspath(source)}") from None
        except OSError as error:
            raise AudioError(
                ErrorCode.AUDIO_DECODE_ERROR, f"cannot read the file: {error.strerror}"
            ) from None
    elif hasattr(source, "read"):
        file, owned = _usable_file_object(source), False
    else:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"cannot decode audio from a {type(source).__name__}")
    try:
        start = _position(file)
        if start is None:
            file = _PeekedStream(file)  # not seekable: the first bytes are read once, to see if any came
        if _is_empty(file):
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "the file is empty")
        if start:
            file = _OffsetView(file, start)  # PyAV seeks to offsets from the start of the recording
        yield file, start is not None
    finally:
        if owned:
            file.close()


@contextmanager
def _open_file(file: BinaryIO, seekable: bool) -> Iterator[_Opened]:
    """The container PyAV opens on `file` (from its start), or AudioError saying why it cannot."""
    if seekable:
        file.seek(0)
    try:
        container = av.open(
            file,
            mode="r",
            **_METADATA_ERRORS,
            buffer_size=_IO_BUFFER,
            io_open=_refuse_nested_open,
            # no network: an SDP file names RTP streams, which FFmpeg would listen for (UDP ports)
            container_options={"protocol_whitelist": "none"},
        )
    except _NestedOpenRefusedError as error:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"not an audio or video file: a playlist or list that points to other files ({error})",
        ) from None
    except av.error.FFmpegError as error:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"cannot read the file as audio or video: not a media file, or corrupt or truncated"
            f" ({_reason(error)})",
        ) from None
    with container:
        if container.format.name == "wav" and seekable:
            _check_wav_size(file)
        if container.format.name in _NOT_MEDIA_FORMATS or container.format.name.endswith("_pipe"):
            raise AudioError(
                ErrorCode.AUDIO_DECODE_ERROR,
                f"not an audio or video file (it looks like {container.format.long_name or 'an image'})",
            )
        if seekable:
            yield _Opened(container, _states_its_length(container, file))
        else:  # FFmpeg states no length for a stream; a WAV header does (the bytes its data holds)
            head = file.head if container.format.name == "wav" else b""
            yield _Opened(container, False, _wav_declared_seconds(head))


def _ogg_links(file: BinaryIO) -> list[tuple[int, int | None]]:
    """The byte ranges (start, end; None: to the end) of a chained Ogg file's links, recordings one
    after another that each begin with their own headers; [] when the file is not a chain.

    FFmpeg's Ogg demuxer stops at a link whose codec parameters differ from the first one's (or misreads
    it as corrupt data), so each link is decoded on its own. A link begins with a page that opens a stream
    (BOS) after a page that does not (the BOS pages of streams multiplexed together come first, in a row).
    Only page headers are read; a page that cannot be read ends the scan, and the last link runs to the
    end of the file, for FFmpeg to decode or refuse as it would any file.
    """
    starts: list[int] = []
    position = 0
    previous_opened_a_stream = True
    try:
        for _ in range(_MAX_OGG_PAGES):  # then the rest is the last link's, as after a page not read
            file.seek(position)
            page = file.read(_OGG_PAGE_HEADER + 255)  # the header and its segment table, at most
            if len(page) < _OGG_PAGE_HEADER or page[:4] != b"OggS" or page[4] != 0:
                break
            lacing = page[_OGG_PAGE_HEADER : _OGG_PAGE_HEADER + page[26]]
            if len(lacing) < page[26]:
                break
            opens_a_stream = bool(page[5] & _OGG_BEGINS_STREAM)
            if opens_a_stream and not previous_opened_a_stream:
                if len(starts) + 1 >= _MAX_OGG_LINKS:
                    raise AudioError(
                        ErrorCode.AUDIO_DECODE_ERROR,
                        f"more than {_MAX_OGG_LINKS} recordings chained in one Ogg file",
                    )
                starts.append(position)
            previous_opened_a_stream = opens_a_stream
            position += _OGG_PAGE_HEADER + len(lacing) + sum(lacing)
    except OSError:
        return []
    finally:
        with suppress(OSError):
            file.seek(0)
    if not starts:
        return []
    bounds = [0, *starts]
    return [(begin, end) for begin, end in zip(bounds, [*starts, None], strict=True)]


@dataclass(frozen=True)
class _Opened:
    container: av.container.InputContainer
    # whether the headers state the length (so decoding less than that means a cut or corrupt file)
    states_length: bool
    # the length a non-seekable WAV's header states, read by us (FFmpeg gives none for a stream)
    stream_declared_seconds: float | None = None


def _usable_file_object(source: BinaryIO) -> BinaryIO:
    """A file object PyAV can read, or AudioError saying what is wrong with it."""
    if getattr(source, "closed", False):
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "the file object is closed")
    if isinstance(source, io.TextIOBase):
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            "the file object is open in text mode; open it in binary mode ('rb')",
        )
    return source


def _position(file: BinaryIO) -> int | None:
    """Where a seekable file object stands, or None when it cannot seek (or only claims to)."""
    try:
        if not file.seekable():
            return None
        return file.tell()
    except (AttributeError, OSError, ValueError):
        return None


class _PeekedStream(io.RawIOBase):
    """A forward-only stream whose first bytes were read ahead (to tell an empty one from the rest)."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self._head = self._read_source(_IO_BUFFER)
        self.head = self._head  # kept: the first bytes, headers to read once the container is open

    def _read_source(self, size: int) -> bytes:
        data = self._file.read(size)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "the file object must return bytes from read()")
        return bytes(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = (
                (self._head, b"")
                if size < 0 or size >= len(self._head)
                else (
                    self._head[:size],
                    self._head[size:],
                )
            )
            return data
        return self._read_source(size if size >= 0 else 1 << 20)

    @property
    def empty(self) -> bool:
        return not self._head


class _OffsetView(io.RawIOBase):
    """A seekable file object seen from `start` on (up to `end`, when given), as if the recording were
    the whole file."""

    def __init__(self, file: BinaryIO, start: int, end: int | None = None) -> None:
        super().__init__()
        self._file = file
        self._start = start
        self._end = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._end is not None:
            left = max(0, self._end - self._file.tell())
            size = left if size < 0 else min(size, left)
        return self._file.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._start
        elif whence == io.SEEK_END and self._end is not None:
            offset, whence = self._end + offset, io.SEEK_SET
        return self._file.seek(offset, whence) - self._start

    def tell(self) -> int:
        return self._file.tell() - self._start


class _NestedOpenRefusedError(Exception):
    pass


def _refuse_nested_open(url: str, flags: int, options: dict) -> None:
    """Playlists and concat lists would make FFmpeg open other files or URLs: refuse all of them."""
    raise _NestedOpenRefusedError(url)


def _check_wav_size(file: BinaryIO) -> None:
    """FFmpeg reads a cut-off WAV as a shorter one: compare the data chunk's declared size with the bytes."""
    try:
        position = file.tell()
        file.seek(0)
        header = file.read(1 << 16)
        size = file.seek(0, io.SEEK_END)
        file.seek(position)
    except (OSError, AttributeError):
        return
    found = _wav_data_chunk(header)
    if found is None:
        return
    offset, length, _ = found
    available = size - offset - 8
    if available < length:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"the file is truncated: the WAV header declares {length} bytes of audio,"
            f" {max(available, 0)} are present",
        )


def _wav_declared_seconds(header: bytes) -> float | None:
    """The seconds of audio a RIFF/WAVE header declares (its data chunk's size over its byte rate)."""
    found = _wav_data_chunk(header)
    if found is None or not found[2]:
        return None
    return found[1] / found[2]


def _wav_data_chunk(header: bytes) -> tuple[int, int, int] | None:
    """(offset of the data chunk, the size it declares, the fmt chunk's bytes per second) of a RIFF/WAVE
    header; None for other files (RF64, W64...: FFmpeg's own checks only), a data chunk beyond these
    bytes, or a size left unknown (a WAV streamed to a pipe: 0 or a placeholder)."""
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(header):
        chunk, length = header[offset : offset + 4], int.from_bytes(header[offset + 4 : offset + 8], "little")
        if chunk == b"fmt " and offset + 20 <= len(header):
            byte_rate = int.from_bytes(header[offset + 16 : offset + 20], "little")
        if chunk == b"data":
            return (offset, length, byte_rate) if 0 < length < _WAV_UNKNOWN_SIZE else None
        offset += 8 + length + (length & 1)
    return None


def _states_its_length(container: av.container.InputContainer, file: BinaryIO) -> bool:
    """Whether the container's length was written in its headers, not guessed by FFmpeg."""
    if container.format.name not in _GUESSED_LENGTH_FORMATS:
        return True
    if container.format.name != "mp3":
        return False
    try:
        position = file.tell()
        file.seek(0)
        head = file.read(10)
        skip = 0
        if head[:3] == b"ID3" and len(head) == 10:  # ID3v2: a syncsafe size, then the first frame
            skip = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
        file.seek(skip)
        first_frame = file.read(4096)
        file.seek(position)
    except (OSError, AttributeError):
        return False
    return any(tag in first_frame for tag in _MP3_LENGTH_TAGS)


def _is_empty(file: BinaryIO) -> bool:
    if isinstance(file, _PeekedStream):
        return file.empty
    try:
        position = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(position)
        return end <= position
    except (OSError, AttributeError):
        return False


def _classify_streams(container: av.container.InputContainer) -> tuple[list, bool]:
    """The audio streams, the one to transcribe first, and whether there is a real video track (cover
    art does not count).

    The one to transcribe is the track a player plays: not a commentary or an audio description, and
    the one flagged default before the others; among equals, the first (faster-whisper takes the
    first, whatever its flags: a film whose commentary came first was transcribed as the commentary).
    """
    audio = [s for s in container.streams.audio if s.codec_context is not None]
    audio.sort(key=lambda s: (bool(s.disposition & _ASIDE_TRACKS), not s.disposition & _DEFAULT_TRACK))
    video = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    return audio, bool(video)


def _leading_gap(container: av.container.InputContainer, stream) -> float:
    """Seconds between a video's first picture and its first sound (0 when under _MIN_LEADING_GAP, or
    when the headers make no sense: a gap past the whole file's length)."""
    pictures = [
        float(video.start_time * video.time_base)
        for video in container.streams.video
        if video.start_time is not None and video.time_base
        and not video.disposition & av.stream.Disposition.attached_pic
    ]  # fmt: skip
    if not pictures or stream.start_time is None or not stream.time_base:
        return 0.0
    gap = float(stream.start_time * stream.time_base) - min(pictures)
    length = container.duration / av.time_base if container.duration else None
    if gap < _MIN_LEADING_GAP or (length is not None and gap >= length):
        return 0.0
    return gap


def _declared_duration(container: av.container.InputContainer, stream) -> float | None:
    """The length the headers state, from the recording's first timestamp (not from 0)."""
    if stream is not None and stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None and container.duration > 0:
        seconds = container.duration / av.time_base
    else:
        return None
    return max(0.0, seconds - _start_not_counted(container))


def _start_not_counted(container: av.container.InputContainer) -> float:
    """Seconds to take off the length FFmpeg states: Matroska's and Ogg's is the last timestamp, so a
    recording whose timestamps begin at 5 s (a stream dump, a clip cut out of a longer one) said 16 s
    for 11 s of audio and was refused as truncated; elsewhere FFmpeg states end minus start already."""
    if container.format.name not in _LENGTH_IS_LAST_TIMESTAMP or not container.start_time:
        return 0.0
    return max(0.0, container.start_time / av.time_base)


def _length_to_check(opened: _Opened, stream) -> float | None:
    """The length decoding must reach, or None when no header states it: the stream's own, else the
    container's when the stream is all it holds (Matroska's length is its longest track's: a video that
    runs on after its audio is not a cut file), never one FFmpeg guessed from a bitrate."""
    if not opened.states_length:
        return opened.stream_declared_seconds
    if stream.duration is None and len(opened.container.streams) > 1:
        return None
    return _declared_duration(opened.container, stream)


def _grouped(frames: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    """Join consecutive frames of the same rate and channels into ~1 s blocks: fewer numpy/soxr calls."""
    pending: list[np.ndarray] = []
    key = None
    size = 0
    for rate, samples in frames:
        if pending and (rate, samples.shape[0]) != key:
            yield key[0], np.concatenate(pending, axis=1)
            pending, size = [], 0
        key = (rate, samples.shape[0])
        pending.append(samples)
        size += samples.shape[1]
        if size >= rate * _GROUP_SECONDS:
            yield rate, np.concatenate(pending, axis=1)
            pending, size = [], 0
    if pending:
        yield key[0], np.concatenate(pending, axis=1)


def _check_rate(rate: int) -> None:
    """A header's rate outside what recordings use is corruption (0: not known yet, frames will say)."""
    if 0 < rate < MIN_SAMPLE_RATE or rate > MAX_SAMPLE_RATE:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"corrupt or not a recording: a sample rate of {rate} Hz"
            f" ({MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz expected)",
        )


def _channels_changed(before: int, after: int) -> AudioError:
    return AudioError(
        ErrorCode.AUDIO_DECODE_ERROR, f"the number of audio channels changes mid-stream ({before} -> {after})"
    )


def _too_long(max_seconds: float) -> AudioError:
    return AudioError(ErrorCode.AUDIO_TOO_LONG, f"the audio is longer than the limit of {max_seconds:.0f} s")


def _decode_frames(
    opened: _Opened, stream, max_seconds: float | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(rate, float32 [C, n]) per decoded frame; bad packets skipped, truncation detected at the end."""
    packets = bad_packets = 0
    # whole samples at the current rate, and the seconds before it: a float sum of frame durations
    # drifts past an exact limit (30.000 s of WAV summed to 30.00000000000002 and was refused)
    seconds_before = 0.0
    rate = samples = 0
    broken: str | None = None
    timeline = _Timeline(_declared_duration(opened.container, stream) if opened.states_length else None)
    demuxed = opened.container.demux(stream)
    while True:
        try:
            packet = next(demuxed)
        except StopIteration:
            break
        except av.error.PatchWelcomeError:
            raise AudioError(
                ErrorCode.AUDIO_DECODE_ERROR,
                "the file uses a feature the decoder does not support (in Ogg: several recordings"
                " chained one after another); convert it to one recording first",
            ) from None
        except av.error.FFmpegError as error:
            broken = _reason(error)
            break
        packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            bad_packets += 1
            continue
        except ValueError as error:  # PyAV 19: no decoder could be opened (a header with 0 channels)
            raise AudioError(
                ErrorCode.AUDIO_DECODE_ERROR, f"the audio track cannot be decoded ({error})"
            ) from None
        for frame in frames:
            if frame.samples == 0 or frame.sample_rate <= 0:
                continue
            _check_rate(frame.sample_rate)
            if frame.sample_rate != rate:
                seconds_before += samples / rate if rate else 0.0
                rate, samples = frame.sample_rate, 0
            for piece in _with_gap_filled(frame, timeline.gap_before(frame)):
                samples += piece.shape[1]
                if max_seconds is not None and seconds_before + samples / rate > max_seconds:
                    raise _too_long(max_seconds)
                yield frame.sample_rate, piece
    seconds = seconds_before + (samples / rate if rate else 0.0)
    if broken is None and seconds == 0.0 and bad_packets == 0:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "the audio track is empty (no samples)")
    if packets and bad_packets > _MAX_BAD_PACKET_RATIO * packets and bad_packets > 2:
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"corrupt audio data: {bad_packets} of {packets} packets could not be decoded",
        )
    declared = _length_to_check(opened, stream)
    fraction, floor = _TRUNCATION_TOLERANCE
    if declared is not None and seconds < declared - max(fraction * declared, floor):
        raise AudioError(
            ErrorCode.AUDIO_DECODE_ERROR,
            f"the file is truncated or corrupt: {seconds:.1f} s of audio decoded, {declared:.1f} s declared",
        )
    if broken is not None and seconds == 0.0:
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"corrupt or truncated data ({broken})")


class _Timeline:
    """How far a stream's timestamps have got, to tell a gap in them (a capture that lost its sound for
    a while: players play silence there, and the video runs on) from frames that follow one another."""

    def __init__(self, length: float | None) -> None:
        self._length = length  # what the headers state, None when they do not
        self._first: float | None = None
        self._furthest: float | None = None

    def gap_before(self, frame: av.AudioFrame) -> float:
        """Seconds of silence due before `frame`: from the furthest time reached to its timestamp, when
        over _MIN_GAP and ending inside the stated length (none stated: no longer than _MAX_UNSTATED_GAP).
        A jump back (files joined end to end) fills nothing, so all the filling is bounded by the span of
        the timestamps; frames without one just follow."""
        seconds = frame.samples / frame.sample_rate
        time = frame.time
        if time is None or self._furthest is None:
            if self._furthest is not None:
                self._furthest += seconds
            elif time is not None:
                self._first, self._furthest = time, time + seconds
            return 0.0
        gap = time - self._furthest
        self._furthest = max(self._furthest, time + seconds)
        if gap < _MIN_GAP:
            return 0.0
        if self._length is None:
            return gap if gap <= _MAX_UNSTATED_GAP else 0.0
        inside = time + seconds - self._first <= self._length + _TRUNCATION_TOLERANCE[1]
        return gap if inside else 0.0


def _with_gap_filled(frame: av.AudioFrame, gap: float) -> Iterator[np.ndarray]:
    """`gap` seconds of silence at the frame's rate and channels, in blocks of a second (a gap of an
    hour is no 700 MB array), then the frame's own samples."""
    left = int(round(gap * frame.sample_rate))
    if left:
        block = np.zeros((frame.layout.nb_channels, min(left, frame.sample_rate)), np.float32)
        while left > 0:
            piece = block[:, :left]
            left -= piece.shape[1]
            yield piece
    yield _frame_to_float(frame)


_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """float32 [C, n] from any PyAV sample format, planar or packed.

    Integer formats land in [-1, 1]; float ones are passed as stored (a float WAV may hold NaN or 1e30),
    so `_iter_resampled` checks every block with `check_sample_values`.
    """
    n_channels = frame.layout.nb_channels
    try:
        data = frame.to_ndarray()
    except ValueError:  # formats PyAV cannot convert (s64 from a 64-bit PCM WAV): read the planes
        data = _planes_to_ndarray(frame, n_channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, n_channels).T
    name = frame.format.name.rstrip("p")
    if name in ("flt", "dbl"):
        with np.errstate(over="ignore"):  # a double beyond float32's range becomes inf, refused later
            return data.astype(np.float32, copy=False)
    if name == "u8":
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32) / np.float32(_SCALE[name])


def _planes_to_ndarray(frame: av.AudioFrame, n_channels: int) -> np.ndarray:
    """What to_ndarray would give ([C, n] planar, [1, n*C] packed) for the integer formats it lacks."""
    name = frame.format.name
    if name.rstrip("p") != "s64":
        raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, f"unsupported audio sample format {name!r}")
    count = frame.samples if frame.format.is_planar else frame.samples * n_channels
    planes = [np.frombuffer(plane, dtype=np.int64, count=count) for plane in frame.planes]
    return np.stack(planes)


def _reason(error: av.error.FFmpegError) -> str:
    return (error.strerror or str(error)).rstrip(".").lower()
