"""Word timestamps: cross-attention of the alignment heads, normalised, median-filtered, then DTW.

Follows CTranslate2's Whisper.align and faster-whisper's find_alignment / add_word_timestamps so the word
times and the segment boundaries they move come out as faster-whisper's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from inference.decoding import log_softmax
from inference.model import CrossKV, OnnxWhisper
from inference.tokenizer import Tokenizer

MEDIAN_FILTER_WIDTH = 7
TOKENS_PER_SECOND = 50  # 16000 / (160 * 2): one encoder position per 20 ms
SENTENCE_END_MARKS = ".。!！?？"


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over the last axis with reflect padding (CTranslate2's MedianFilter)."""
    rank = width // 2
    if x.shape[-1] <= rank:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(rank, rank)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1).astype(np.float32)


def negative_dtw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic time warping maximising the sum of x [n, m]; (text_indices, time_indices) of the path.

    Evaluated one anti-diagonal at a time (numpy) with the tie-breaking of openai-whisper / CTranslate2.
    """
    x = np.asarray(x, dtype=np.float32)
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    cost[0, 0] = 0
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        pick0 = (c0 < c1) & (c0 < c2)
        pick1 = ~pick0 & (c1 < c0) & (c1 < c2)
        t = np.where(pick0, 0, np.where(pick1, 1, 2))
        c = np.where(pick0, c0, np.where(pick1, c1, c2))
        cost[i, j] = -x[i - 1, j - 1] + c
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    arr = np.asarray(path, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _text_token_probs(
    model: OnnxWhisper, cross: CrossKV, start: Sequence[int], text_tokens: Sequence[int], eot: int
) -> np.ndarray:
    """P(token | previous) over the text vocabulary (< eot) for each text token, as CTranslate2's align."""
    logits, cache = model.decode(np.asarray([list(start)]), None, cross)
    probs = []
    for k, token in enumerate(text_tokens):
        p = np.exp(log_softmax(logits[0, :eot].astype(np.float32)))
        probs.append(p[token])
        if k + 1 < len(text_tokens):
            logits, cache = model.decode(np.asarray([[token]]), cache, cross)
    return np.asarray(probs, dtype=np.float32)


def find_alignment(
    model: OnnxWhisper, tokenizer: Tokenizer, text_tokens: list[int], cross: CrossKV, num_frames: int
) -> list[dict]:
    """Words of `text_tokens` with start/end (seconds from the window start) and probability."""
    if not text_tokens:
        return []
    sot_sequence = list(tokenizer.sot_sequence)
    start = sot_sequence + [tokenizer.no_timestamps]
    tokens = start + text_tokens + [tokenizer.eot]
    weights = model.align(tokens, cross).astype(np.float32)  # [heads, S, 1500], softmax over 1500
    frames = num_frames // 2
    if frames < weights.shape[-1]:
        # softmax over the content frames only = the full softmax renormalised over them
        weights = weights[:, :, :frames]
        weights = weights / weights.sum(axis=-1, keepdims=True)
    mean = weights.mean(axis=-2, keepdims=True)
    std = weights.std(axis=-2, keepdims=True)
    weights = (weights - mean) / std
    weights = median_filter(weights, MEDIAN_FILTER_WIDTH).mean(axis=0)
    matrix = weights[len(sot_sequence) : -1]
    text_indices, time_indices = negative_dtw(matrix)
    token_probs = _text_token_probs(model, cross, start, text_tokens, tokenizer.eot)

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    word_boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    if len(word_boundaries) <= 1:
        return []
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    start_times = jump_times[word_boundaries[:-1]]
    end_times = jump_times[word_boundaries[1:]]
    probabilities = [
        float(np.mean(token_probs[i:j]))
        for i, j in zip(word_boundaries[:-1], word_boundaries[1:], strict=True)
    ]
    return [
        {"word": w, "tokens": t, "start": float(s), "end": float(e), "probability": p}
        for w, t, s, e, p in zip(words, word_tokens, start_times, end_times, probabilities, strict=False)
    ]


def merge_punctuations(alignment: list[dict], prepended: str, appended: str) -> None:
    """Attach leading punctuation to the next word and trailing punctuation to the previous one."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous["word"].startswith(" ") and previous["word"].strip() in prepended:
            following["word"] = previous["word"] + following["word"]
            following["tokens"] = previous["tokens"] + following["tokens"]
            previous["word"], previous["tokens"] = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous["word"].endswith(" ") and following["word"] in appended:
            previous["word"] = previous["word"] + following["word"]
            previous["tokens"] = previous["tokens"] + following["tokens"]
            following["word"], following["tokens"] = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(
    model: OnnxWhisper,
    tokenizer: Tokenizer,
    segments: list[dict],
    cross: CrossKV,
    num_frames: int,
    prepend_punctuations: str,
    append_punctuations: str,
    last_speech_timestamp: float,
) -> None:
    """Set segment["words"] on one window's segments and adjust their start/end (faster-whisper)."""
    if not segments:
        return
    eot = tokenizer.eot
    per_segment = [[t for t in s["tokens"] if t < eot] for s in segments]
    text_tokens = list(itertools.chain.from_iterable(per_segment))
    alignment = find_alignment(model, tokenizer, text_tokens, cross, num_frames)
    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    median_duration = float(np.median(durations)) if len(durations) > 0 else 0.0
    median_duration = min(0.7, median_duration)
    max_duration = median_duration * 2
    if len(durations) > 0:
        for i in range(1, len(alignment)):
            if alignment[i]["end"] - alignment[i]["start"] > max_duration:
                if alignment[i]["word"] in SENTENCE_END_MARKS:
                    alignment[i]["end"] = alignment[i]["start"] + max_duration
                elif alignment[i - 1]["word"] in SENTENCE_END_MARKS:
                    alignment[i]["start"] = alignment[i]["end"] - max_duration
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    time_offset = segments[0]["seek"] / 100  # frames per second
    word_index = 0
    for index, segment in enumerate(segments):
        saved_tokens = 0
        words = []
        while word_index < len(alignment) and saved_tokens < len(per_segment[index]):
            timing = alignment[word_index]
            if timing["word"]:
                words.append(
                    {
                        "word": timing["word"],
                        "start": round(time_offset + timing["start"], 2),
                        "end": round(time_offset + timing["end"], 2),
                        "probability": timing["probability"],
                    }
                )
            saved_tokens += len(timing["tokens"])
            word_index += 1
        if words:
            _clip_pause_words(words, last_speech_timestamp, median_duration, max_duration)
            if segment["start"] < words[0]["end"] and segment["start"] - 0.5 > words[0]["start"]:
                words[0]["start"] = max(0, min(words[0]["end"] - median_duration, segment["start"]))
            else:
                segment["start"] = words[0]["start"]
            if segment["end"] > words[-1]["start"] and segment["end"] + 0.5 < words[-1]["end"]:
                words[-1]["end"] = max(words[-1]["start"] + median_duration, segment["end"])
            else:
                segment["end"] = words[-1]["end"]
            last_speech_timestamp = segment["end"]
        segment["words"] = words


def _clip_pause_words(
    words: list[dict], last_speech: float, median_duration: float, max_duration: float
) -> None:
    """The first and second word after a pause are at most twice the median word long."""
    if words[0]["end"] - last_speech > median_duration * 4 and (
        words[0]["end"] - words[0]["start"] > max_duration
        or (len(words) > 1 and words[1]["end"] - words[0]["start"] > max_duration * 2)
    ):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_duration:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - max_duration)
            words[0]["end"] = words[1]["start"] = boundary
        words[0]["start"] = max(0, words[0]["end"] - max_duration)
