"""`WhisperEngine`: faster-whisper's transcription loop (30 s windows, seeking on timestamps) on our model.

Windows are decoded lazily as the segment generator is iterated, so closing it stops the work. Nothing on
the engine changes during a call: several threads may transcribe with one engine at once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import numpy as np

from cliptext.errors import ErrorCode
from inference.alignment import add_word_timestamps
from inference.audio import AudioSource, MediaInfo, decode_audio, iter_audio_chunks, probe_media
from inference.config import ModelConfig
from inference.decoding import DecodingOptions, DecodingResult, SpecialIds, WindowDecoder, log_softmax
from inference.features import HOP_LENGTH, N_FRAMES, SAMPLING_RATE, FeatureExtractor, pad_or_trim
from inference.mel_stream import open_stream
from inference.model import CrossKV, OnnxWhisper
from inference.pcm import MAX_CHANNELS
from inference.tokenizer import SpecialTokens, Tokenizer
from inference.types import MAX_TOKENS as MAX_LENGTH  # the decoder's context
from inference.types import (
    AudioError,
    EngineError,
    OptionsError,
    Segment,
    Stopped,
    TranscribeOptions,
    TranscriptionInfo,
    Word,
)

TIME_PRECISION = 0.02  # seconds per timestamp token
SAMPLING_SEED = 0
INPUT_STRIDE = 2  # mel frames per encoder position
FRAMES_PER_SECOND = SAMPLING_RATE // HOP_LENGTH
TIME_PER_FRAME = HOP_LENGTH / SAMPLING_RATE
# files longer than this are read twice in chunks instead of being held in memory
STREAM_MIN_SECONDS = 120.0
STREAM_CHUNK_SECONDS = 30.0
# channels="split" transcribes each channel on its own (a long one from its own temporary file): as many
# as raw PCM may carry
MAX_SPLIT_CHANNELS = MAX_CHANNELS


def compression_ratio(text: str) -> float:
    """gzip ratio of the text: high for repetitive (looping) output."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def _never() -> bool:
    return False


def _too_many_channel_seconds(channels: int, seconds: float | None, max_seconds: float) -> AudioError:
    length = f"{seconds:.0f} s" if seconds is not None else f"over {max_seconds / channels:.0f} s"
    return AudioError(
        ErrorCode.AUDIO_TOO_LONG,
        f"{channels} channels of {length} to transcribe one by one, over the limit of {max_seconds:.0f} s",
    )


def _check_split_channels(channels: int) -> None:
    if channels > MAX_SPLIT_CHANNELS:
        raise OptionsError(
            f"channels=split transcribes each channel on its own: at most {MAX_SPLIT_CHANNELS} channels,"
            f" this audio has {channels}"
        )


def _check_channel_seconds(channels: int, seconds: float, max_seconds: float) -> None:
    """Split, the work and the memory are those of every channel's seconds together."""
    if channels * seconds > max_seconds:
        raise _too_many_channel_seconds(channels, seconds, max_seconds)


def _load_tokenizer(path: Path, config: ModelConfig) -> Tokenizer:
    """The model's English tokenizer; a missing or damaged tokenizer.json is an EngineError naming it
    (the CLI prints one line, the server reports it), not the tokenizers library's bare Exception."""
    if not path.is_file():
        raise EngineError(ErrorCode.INTERNAL, f"{path}: missing from the exported model (export it again)")
    try:
        return Tokenizer.from_file(path, False, config=config)
    except Exception as exc:  # tokenizers raises plain Exception
        reason = f"cannot be loaded, damaged or not a tokenizer ({exc})"
        raise EngineError(ErrorCode.INTERNAL, f"{path}: {reason}") from exc


class WhisperEngine:
    """Transcribes audio with an `OnnxWhisper` model the way faster-whisper's WhisperModel does."""

    def __init__(self, model: OnnxWhisper):
        self.model = model
        self.config = model.config
        self.feature_extractor = FeatureExtractor(self.config.n_mels)
        self._special = SpecialTokens.from_config(self.config)
        self._tokenizer_file = Path(model.model_dir) / "tokenizer.json"
        self._english = _load_tokenizer(self._tokenizer_file, self.config)
        c = self.config
        self.ids = SpecialIds(c.sot, c.eot, c.no_timestamps, c.timestamp_begin, c.no_speech, c.n_vocab)

    @classmethod
    def load(
        cls, model_dir: str | Path, precision: str = "auto", device: str = "auto", threads: int = 0
    ) -> WhisperEngine:
        return cls(OnnxWhisper(model_dir, precision=precision, device=device, threads=threads))

    # -- public -------------------------------------------------------------------------------------

    def transcribe(
        self,
        source: AudioSource,
        options: TranscribeOptions | None = None,
        max_seconds: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """(lazy segments, info) for `source`: path, bytes, binary file or float32 16 kHz array.

        `max_seconds` refuses longer audio (AudioError AUDIO_TOO_LONG) while decoding it, whatever its
        header claims, so a file that lies about its length is never decoded whole. `stop()` true (the
        caller has gone) ends the segments at the next window or temperature fallback, even where no
        segment comes out for a long time (silence, noise that fails every temperature); turning true
        during a long file's first pass, before this returns, it raises Stopped.
        """
        options = options or TranscribeOptions()
        self.check_options(options)
        probed = probe_media(source) if isinstance(source, (str, os.PathLike)) else None  # once per call
        audio = self._short_audio(source, options, max_seconds, probed)
        if audio is not None and audio.ndim == 2:
            _check_split_channels(audio.shape[0])
        spools: list[IO[bytes]] = []
        if audio is None:
            declared_channels = probed.channels if probed is not None else None
            sources, n_samples, spools = self._streamed(
                source, options.channels, max_seconds, stop or _never, declared_channels
            )
        else:
            channels = [audio] if audio.ndim == 1 else list(audio)
            n_samples = channels[0].shape[0]
            sources = [lambda a=a: self._in_memory(a) for a in channels]
        try:
            tokenizer_for, language, probability, all_probs = self._language(sources[0], options)
        except BaseException:
            _close_all(spools)
            raise
        info = TranscriptionInfo(
            language=language,
            language_probability=probability,
            duration=n_samples / SAMPLING_RATE,
            options=options,
            channels=len(sources),
            all_language_probs=all_probs,
        )
        segments = self._segments(sources, tokenizer_for, options, stop or _never)
        return (_Closing(segments, spools) if spools else segments), info

    def check_options(self, options: TranscribeOptions) -> None:
        """What only this model can tell about `options` (its languages, its vocabulary); callers that
        receive audio afterwards (the gRPC server) ask before reading it."""
        if options.language is not None and options.language not in self.config.language_codes:
            raise OptionsError(f"unknown language {options.language!r}")
        if options.language not in (None, "en") and not self.config.is_multilingual:
            # faster-whisper quietly transcribes English; a caller who named another language would
            # get an English rendering of speech the model cannot hear as what it is
            raise OptionsError(
                f"language {options.language!r}: this model is English-only (give 'en' or no language)"
            )
        if options.task == "translate" and not self.config.is_multilingual:
            raise OptionsError("translate needs a multilingual model")
        if any(t >= self.config.n_vocab for t in options.suppress_tokens):
            raise OptionsError(f"suppress_tokens ids must be below the vocabulary size {self.config.n_vocab}")

    def detect_language(self, audio: np.ndarray) -> tuple[str, float, tuple[tuple[str, float], ...]]:
        """Language of the first 30 s: (code, probability, all (code, probability) best first)."""
        return self._detect_language(self.feature_extractor(audio)[:, :N_FRAMES])

    def _detect_language(self, mel: np.ndarray) -> tuple[str, float, tuple[tuple[str, float], ...]]:
        if not self.config.is_multilingual:
            return "en", 1.0, (("en", 1.0),)
        cross = self.model.encode(pad_or_trim(mel)[None])
        logits, _ = self.model.decode(np.asarray([[self.config.sot]]), None, cross)
        lang_ids = np.asarray(self.config.lang_ids)
        probs = np.exp(log_softmax(logits[0, lang_ids].astype(np.float32)))
        order = np.argsort(-probs, kind="stable")
        ranked = tuple((self.config.language_codes[i], float(probs[i])) for i in order)
        return ranked[0][0], ranked[0][1], ranked

    # -- steps --------------------------------------------------------------------------------------

    def _short_audio(
        self,
        source: AudioSource,
        options: TranscribeOptions,
        max_seconds: float | None,
        probed: MediaInfo | None,
    ) -> np.ndarray | None:
        """The audio decoded whole, or None where it is streamed window by window (bounded memory):
        longer than STREAM_MIN_SECONDS by its headers or, when they do not tell (a FLAC without its
        sample count, a browser's WebM), once that much of it was decoded. Short audio keeps the
        whole-file features bit for bit (the stream's differ by an ulp here and there). `probed`: the
        headers of a path (None for other sources)."""
        if probed is not None:
            split = options.channels == "split"
            n_channels = (probed.channels or 1) if split else 1
            _check_split_channels(n_channels)
            # split, every channel's seconds count: 32 channels of 119 s decoded whole held 245 MB
            if probed.duration is not None and probed.duration * n_channels > STREAM_MIN_SECONDS:
                if split and max_seconds is not None:  # (_load_audio checks what it decodes)
                    _check_channel_seconds(n_channels, probed.duration, max_seconds)
                return None
            whole_limit = STREAM_MIN_SECONDS  # of every channel together
            if probed.duration is None and (max_seconds is None or max_seconds > whole_limit):
                try:
                    return self._load_audio(source, options.channels, whole_limit, probed)
                except AudioError as error:
                    if error.code != ErrorCode.AUDIO_TOO_LONG:
                        raise
                    return None
        return self._load_audio(source, options.channels, max_seconds, probed)

    def _streamed(
        self,
        path: str | os.PathLike,
        channels: str,
        max_seconds: float | None,
        stop: Callable[[], bool],
        declared_channels: int | None,
    ) -> tuple[list, int, list[IO[bytes]]]:
        """(window sources, samples, temporary files to close) of a long file read in two passes, window
        by window, so only a few windows of samples and features are held whatever its length. Split, one
        decoding pass first writes each channel to a temporary file, which its two passes then read:
        decoding the file twice per channel would cost passes in the square of the channel count.
        Raises Stopped when `stop()` turns true between two chunks of a pass that yields no segment."""
        if channels != "split":
            mixed, n_samples = self._opened(
                lambda: _until_stopped(
                    iter_audio_chunks(path, SAMPLING_RATE, STREAM_CHUNK_SECONDS, max_seconds=max_seconds),
                    stop,
                )
            )
            return [lambda: mixed], n_samples, []
        spools = _channels_to_files(path, declared_channels or 1, max_seconds, stop)
        try:
            first, n_samples = self._opened(lambda: _until_stopped(_spooled_chunks(spools[0]), stop))
        except BaseException:
            _close_all(spools)
            raise
        later = [
            lambda f=f: self._opened(lambda: _until_stopped(_spooled_chunks(f), stop))[0] for f in spools[1:]
        ]
        return [lambda: first, *later], n_samples, spools

    def _opened(self, open_chunks: Callable[[], Iterator[np.ndarray]]) -> tuple[tuple, int]:
        """((window, content frames), samples) of one stream; its first pass runs now."""
        stream, content_frames, n_samples = open_stream(self.feature_extractor, open_chunks)
        return (stream.window, content_frames), n_samples

    def _in_memory(self, audio: np.ndarray) -> tuple[Callable[[int, int], np.ndarray], int]:
        features = self.feature_extractor(audio)
        return (lambda seek, size: features[:, seek : seek + size]), features.shape[-1] - 1

    def _load_audio(
        self, source: AudioSource, channels: str, max_seconds: float | None, probed: MediaInfo | None = None
    ) -> np.ndarray:
        """The whole file in memory. Split, every channel is transcribed: `max_seconds` counts the
        seconds of all of them, as the work and the memory do (8 channels of 1 h held 4 GB). `probed`:
        its headers when the caller read them already."""
        if isinstance(source, np.ndarray):
            audio = np.asarray(source, dtype=np.float32)
            if audio.ndim == 2 and channels == "mix":
                audio = audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]
            if audio.ndim not in (1, 2):
                raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "audio array must be 1-D or [channels, n]")
            if audio.ndim == 2 and max_seconds is not None:
                _check_channel_seconds(audio.shape[0], audio.shape[1] / SAMPLING_RATE, max_seconds)
            return audio
        if channels != "split" or max_seconds is None:
            return decode_audio(source, SAMPLING_RATE, channels=channels, max_seconds=max_seconds)
        if probed is None and isinstance(
            source, (str, os.PathLike, bytes)
        ):  # not a file object: its position
            probed = probe_media(source)
        n_channels = (probed.channels if probed is not None else None) or 1
        if probed is not None and probed.duration is not None:
            _check_channel_seconds(n_channels, probed.duration, max_seconds)
        try:
            audio = decode_audio(
                source, SAMPLING_RATE, channels=channels, max_seconds=max_seconds / n_channels
            )
        except AudioError as error:
            if error.code == ErrorCode.AUDIO_TOO_LONG and n_channels > 1:  # the headers under-stated it
                raise _too_many_channel_seconds(n_channels, None, max_seconds) from error
            raise
        _check_channel_seconds(audio.shape[0], audio.shape[-1] / SAMPLING_RATE, max_seconds)
        return audio

    def _language(self, first_source, options: TranscribeOptions):
        language, probability, all_probs = options.language, 1.0, None
        if not self.config.is_multilingual:
            language = "en"  # check_options refused any other
        elif language is None:
            window, content_frames = first_source()
            mel = window(0, min(N_FRAMES, content_frames + 1))
            language, probability, all_probs = self._detect_language(mel)

        def tokenizer_for() -> Tokenizer:
            if not self.config.is_multilingual:
                return self._english
            return Tokenizer(self._english.tokenizer, True, options.task, language, self._special)

        return tokenizer_for, language, probability, all_probs

    def _segments(
        self, sources: list, tokenizer_for, options: TranscribeOptions, stop: Callable[[], bool]
    ) -> Iterator[Segment]:
        tokenizer = tokenizer_for()
        next_id = 1
        for index, source in enumerate(sources):
            if stop():
                return
            try:  # a stream's chunks raise Stopped too (a later channel's first pass has no other check)
                window, content_frames = source()
                for segment in self._generate_segments(window, content_frames, tokenizer, options, stop):
                    yield replace(segment, id=next_id, channel=index)
                    next_id += 1
            except Stopped:
                return

    def _decoding_options(self, tokenizer: Tokenizer, options: TranscribeOptions) -> DecodingOptions:
        suppress: tuple[int, ...] = ()
        if options.suppress_tokens:
            ids = [t for t in options.suppress_tokens if t >= 0]
            if -1 in options.suppress_tokens:
                ids.extend(tokenizer.non_speech_tokens)
            s = self._special
            ids.extend([s.transcribe, s.translate, s.sot, s.sot_prev, s.sot_lm, s.no_speech])
            suppress = tuple(sorted(set(ids)))
        penalty = 1.0 if options.length_penalty is None else float(options.length_penalty)
        return DecodingOptions(
            beam_size=options.beam_size,
            patience=options.patience,
            length_penalty=penalty,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            suppress_tokens=suppress,
            suppress_begin=tuple(self.config.suppress_ids_begin) if options.suppress_blank else (),
            timestamps=not options.without_timestamps,
            max_initial_timestamp_index=int(round(options.max_initial_timestamp / TIME_PRECISION)),
        )

    def _prompt(
        self, tokenizer: Tokenizer, previous: list[int], options: TranscribeOptions, prefix: str | None
    ) -> list[int]:
        prompt = list(tokenizer.sot_sequence)
        if options.without_timestamps:
            prompt.append(tokenizer.no_timestamps)
        if prefix:
            prefix_tokens = tokenizer.encode(" " + prefix.strip())
            if len(prefix_tokens) >= MAX_LENGTH // 2:
                prefix_tokens = prefix_tokens[: MAX_LENGTH // 2 - 1]
            if not options.without_timestamps:
                prompt.append(tokenizer.timestamp_begin)
            prompt.extend(prefix_tokens)
        if previous:
            # faster-whisper's 223 tokens of context, fewer when a long prefix would otherwise push the
            # prompt past the decoder's last position (its oldest tokens go first)
            room = min(MAX_LENGTH // 2 - 1, MAX_LENGTH - 1 - len(prompt))
            prompt[:0] = [tokenizer.sot_prev, *previous[max(0, len(previous) - room) :]]
        return prompt

    def _generate_segments(
        self,
        window: Callable[[int, int], np.ndarray],
        content_frames: int,
        tokenizer: Tokenizer,
        options: TranscribeOptions,
        stop: Callable[[], bool] = _never,
    ) -> Iterator[Segment]:
        """faster-whisper's generate_segments (without clip timestamps, VAD or hallucination skipping).

        `window(seek, size)` gives the mel frames [seek, seek + size) of the whole-file features.
        """
        base = self._decoding_options(tokenizer, options)
        # the temperature fallback samples: seeded per transcription, the same audio and options give the
        # same transcript (a job run again after its worker died stores what the first run would have)
        decoder = WindowDecoder(self.model, self.ids, rng=np.random.default_rng(SAMPLING_SEED), stop=stop)
        seek = 0
        all_tokens: list[int] = []
        prompt_reset_since = 0
        if options.initial_prompt is not None:
            all_tokens.extend(tokenizer.encode(" " + options.initial_prompt.strip()))
        last_speech_timestamp = 0.0
        while seek < content_frames:
            if stop():
                return
            time_offset = seek * TIME_PER_FRAME
            segment_size = min(N_FRAMES, content_frames - seek)
            content = window(seek, segment_size)
            segment_duration = segment_size * TIME_PER_FRAME
            if content.size and np.all(content == content.flat[0]):
                # digital silence: beam search would hallucinate " You" here (faster-whisper does)
                seek += segment_size
                continue
            mel = pad_or_trim(content)
            cross = self.model.encode(mel[None])
            prompt = self._prompt(
                tokenizer, all_tokens[prompt_reset_since:], options, options.prefix if seek == 0 else None
            )
            try:
                result, avg_logprob, temperature, ratio = self._generate_with_fallback(
                    decoder, cross, prompt, tokenizer, options, base, stop
                )
            except Stopped:  # the caller went during the window: it is dropped, as below
                return
            if stop():
                return
            if options.no_speech_threshold is not None:
                should_skip = result.no_speech_prob > options.no_speech_threshold
                if options.log_prob_threshold is not None and avg_logprob > options.log_prob_threshold:
                    should_skip = False
                if should_skip:
                    seek += segment_size
                    continue
            previous_seek = seek
            current, seek, single_timestamp_ending = self._split_by_timestamps(
                tokenizer, list(result.tokens), time_offset, segment_size, segment_duration, seek
            )
            if options.word_timestamps:
                add_word_timestamps(
                    self.model,
                    tokenizer,
                    current,
                    cross,
                    segment_size,
                    options.prepend_punctuations,
                    options.append_punctuations,
                    last_speech_timestamp,
                )
                if not single_timestamp_ending:
                    last_word_end = _last_word_end(current)
                    if last_word_end is not None and last_word_end > time_offset:
                        seek = round(last_word_end * FRAMES_PER_SECOND)
                last_word_end = _last_word_end(current)
                if last_word_end is not None:
                    last_speech_timestamp = last_word_end
            for segment in current:
                tokens = segment["tokens"]
                text = tokenizer.decode(tokens)
                if segment["start"] == segment["end"] or not text.strip():
                    continue
                all_tokens.extend(tokens)
                words = None
                if options.word_timestamps:
                    words = tuple(
                        Word(w["start"], w["end"], w["word"], w["probability"]) for w in segment["words"]
                    )
                yield Segment(
                    id=0,
                    seek=previous_seek,
                    start=segment["start"],
                    end=segment["end"],
                    text=text,
                    tokens=tuple(tokens),
                    avg_logprob=avg_logprob,
                    compression_ratio=ratio,
                    no_speech_prob=result.no_speech_prob,
                    temperature=temperature,
                    words=words,
                )
            if not options.condition_on_previous_text or temperature > options.prompt_reset_on_temperature:
                prompt_reset_since = len(all_tokens)

    def _generate_with_fallback(
        self,
        decoder: WindowDecoder,
        cross: CrossKV,
        prompt: list[int],
        tokenizer: Tokenizer,
        options: TranscribeOptions,
        base: DecodingOptions,
        stop: Callable[[], bool] = _never,
    ) -> tuple[DecodingResult, float, float, float]:
        """Decode at the first temperature whose output passes the thresholds (faster-whisper)."""
        new_tokens = options.max_new_tokens
        total = MAX_LENGTH if new_tokens is None else len(prompt) + new_tokens
        if total > MAX_LENGTH:
            raise OptionsError(f"prompt ({len(prompt)} tokens) + max_new_tokens exceeds {MAX_LENGTH}")
        sot_index = prompt.index(tokenizer.sot)
        prompt_length = sot_index
        while (
            prompt_length < len(prompt) and tokenizer.sot <= prompt[prompt_length] <= tokenizer.no_timestamps
        ):
            prompt_length += 1
        start_step = prompt_length - 1
        max_length = min(total // 2, total - start_step)
        all_results = []
        below_cr_threshold = []
        temperature = options.temperatures[0]
        for attempt, temperature in enumerate(options.temperatures):
            if attempt and stop():
                break  # the caller checks stop() too and drops this window
            if temperature > 0:
                decoding = replace(
                    base,
                    beam_size=1,
                    temperature=temperature,
                    num_hypotheses=options.best_of,
                    max_length=max_length,
                )
            else:
                decoding = replace(base, max_length=max_length)
            result = decoder.decode(cross, prompt, decoding)
            avg_logprob = result.avg_logprob
            ratio = compression_ratio(tokenizer.decode(list(result.tokens)).strip())
            current = (result, avg_logprob, temperature, ratio)
            all_results.append(current)
            needs_fallback = False
            if options.compression_ratio_threshold is not None:
                if ratio > options.compression_ratio_threshold:
                    needs_fallback = True
                else:
                    below_cr_threshold.append(current)
            if options.log_prob_threshold is not None and avg_logprob < options.log_prob_threshold:
                needs_fallback = True
            if (
                options.no_speech_threshold is not None
                and result.no_speech_prob > options.no_speech_threshold
                and options.log_prob_threshold is not None
                and avg_logprob < options.log_prob_threshold
            ):
                needs_fallback = False
            if not needs_fallback:
                return current
        best = max(below_cr_threshold or all_results, key=lambda r: r[1])
        return best[0], best[1], temperature, best[3]

    def _split_by_timestamps(
        self,
        tokenizer: Tokenizer,
        tokens: list[int],
        time_offset: float,
        segment_size: int,
        segment_duration: float,
        seek: int,
    ) -> tuple[list[dict], int, bool]:
        """Cut a window's tokens into segments at consecutive timestamps; where to seek next."""
        ts_begin = tokenizer.timestamp_begin
        segments = []
        single_timestamp_ending = len(tokens) >= 2 and tokens[-2] < ts_begin <= tokens[-1]
        consecutive = [
            i for i in range(1, len(tokens)) if tokens[i] >= ts_begin and tokens[i - 1] >= ts_begin
        ]
        if consecutive:
            slices = list(consecutive)
            if single_timestamp_ending:
                slices.append(len(tokens))
            last_slice = 0
            for current_slice in slices:
                sliced = tokens[last_slice:current_slice]
                start = time_offset + (sliced[0] - ts_begin) * TIME_PRECISION
                end = time_offset + (sliced[-1] - ts_begin) * TIME_PRECISION
                segments.append({"seek": seek, "start": start, "end": end, "tokens": sliced})
                last_slice = current_slice
            if single_timestamp_ending:
                seek += segment_size
            else:
                seek += (tokens[last_slice - 1] - ts_begin) * INPUT_STRIDE
        else:
            duration = segment_duration
            timestamps = [t for t in tokens if t >= ts_begin]
            if timestamps and timestamps[-1] != ts_begin:
                duration = (timestamps[-1] - ts_begin) * TIME_PRECISION
            segments.append(
                {"seek": seek, "start": time_offset, "end": time_offset + duration, "tokens": tokens}
            )
            seek += segment_size
        return segments, seek, single_timestamp_ending


def _channels_to_files(
    path: str | os.PathLike, n_channels: int, max_seconds: float | None, stop: Callable[[], bool]
) -> list[IO[bytes]]:
    """Each channel of `path` at 16 kHz as float32 in its own anonymous temporary file (removed when
    closed or collected), in one decoding pass; every channel's seconds count against `max_seconds`
    (`n_channels`: as the headers say, to bound each channel's decoding; the decoder's count decides)."""
    per_channel = None if max_seconds is None else max_seconds / n_channels
    # chunks of STREAM_CHUNK_SECONDS of all channels together: 30 s of each of 24 channels is 46 MB
    chunk_seconds = STREAM_CHUNK_SECONDS / max(n_channels, 1)
    spools: list[IO[bytes]] = []
    n_samples = 0
    try:
        chunks = iter_audio_chunks(path, SAMPLING_RATE, chunk_seconds, "split", per_channel)
        for chunk in _until_stopped(chunks, stop):
            if not spools:  # the decoder's count: the headers may not give it
                _check_split_channels(chunk.shape[0])
                spools = [_anonymous_file() for _ in range(chunk.shape[0])]
            for spool, row in zip(spools, chunk, strict=True):
                spool.write(np.ascontiguousarray(row, dtype=np.float32).data)
            n_samples += chunk.shape[-1]
            if max_seconds is not None:  # by the decoded count too: the headers may under-state it
                _check_channel_seconds(len(spools), n_samples / SAMPLING_RATE, max_seconds)
        if not spools:
            raise AudioError(ErrorCode.AUDIO_DECODE_ERROR, "no audio could be decoded")
    except BaseException as error:
        _close_all(spools)
        if isinstance(error, AudioError) and error.code == ErrorCode.AUDIO_TOO_LONG and n_channels > 1:
            raise _too_many_channel_seconds(n_channels, None, max_seconds) from error
        raise
    return spools


def _until_stopped(chunks: Iterator[np.ndarray], stop: Callable[[], bool]) -> Iterator[np.ndarray]:
    """`chunks`, raising Stopped between two of them once `stop()` is true: the first pass over hours of
    audio comes before any window, where the decoding loop checks it."""
    with contextlib.closing(chunks):
        for chunk in chunks:
            if stop():
                raise Stopped("the caller has gone")
            yield chunk


def _anonymous_file() -> IO[bytes]:
    # outlives this call: closed (and its space freed) by _Closing when the segments end or are closed
    return tempfile.TemporaryFile(prefix="cliptext-channel-")  # noqa: SIM115


def _close_all(files: list[IO[bytes]]) -> None:
    for file in files:
        file.close()


class _Closing:
    """`segments`, whose `files` are closed when they end or fail, or when the caller closes them, even
    before the first (a generator closed before it starts never runs its own clean-up)."""

    def __init__(self, segments: Iterator[Segment], files: list[IO[bytes]]):
        self._segments, self._files = segments, files

    def __iter__(self) -> _Closing:
        return self

    def __next__(self) -> Segment:
        try:
            return next(self._segments)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._segments.close()
        _close_all(self._files)


def _spooled_chunks(spool: IO[bytes]) -> Iterator[np.ndarray]:
    spool.seek(0)
    while block := spool.read(int(STREAM_CHUNK_SECONDS * SAMPLING_RATE) * 4):
        yield np.frombuffer(block, np.float32)


def _last_word_end(segments: list[dict]) -> float | None:
    fallback = segments[-1]["end"] if segments else None
    return next((w["end"] for s in reversed(segments) for w in reversed(s["words"])), fallback)
