"""Token decoding of one 30 s window: greedy, beam search and sampling, with whisper's logit filters.

Written to give the very tokens CTranslate2's `Whisper.generate` gives faster-whisper (decoding.cc,
decoding_utils.cc, models/whisper.cc): the same filter order, the same timestamp rules, the same beam
bookkeeping (2 x beam candidates, finished hypotheses replaced by the next live candidate, stop after
round(beam x patience) finished ones, scores normalised by length ** length_penalty).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from inference.model import CrossKV, OnnxWhisper
from inference.types import OptionsError, Stopped

NEG_INF = np.float32(-np.inf)
# how often a window's decoding asks whether its caller has gone (a step is a few ms)
STOP_CHECK_STEPS = 8
# CTranslate2 gives this score to candidates it must keep but never pick
_HOPELESS = -1e10
# beam search ranks its candidates among the entries that reach the k-th best of these first columns
_SAMPLE_COLUMNS = 2048
# log-probabilities are recomputed exactly for entries within this (plus a relative 1e-6) of the bound:
# far wider than the float32 rounding of the three operations that make one
_BOUND_MARGIN = np.float32(1e-2)


@dataclass(frozen=True)
class SpecialIds:
    """The token ids the decoding rules need (from the model config)."""

    sot: int
    eot: int
    no_timestamps: int
    timestamp_begin: int
    no_speech: int
    n_vocab: int


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode one window; frozen, changed with dataclasses.replace."""

    # 1: greedy (or sampling when temperature > 0); > 1: beam search
    beam_size: int = 1
    # beam search stops after round(beam_size * patience) finished hypotheses
    patience: float = 1.0
    # hypotheses are ranked by sum(logprob) / length ** length_penalty
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    # 0: take the most likely token; > 0: sample from softmax(logits / temperature)
    temperature: float = 0.0
    # independent samples drawn when temperature > 0 (best_of)
    num_hypotheses: int = 1
    # decoding steps, forced prefix tokens included (CTranslate2's max_length after the prompt)
    max_length: int = 224
    # token ids never generated
    suppress_tokens: tuple[int, ...] = ()
    # token ids not generated at the first free step (blank and end of text)
    suppress_begin: tuple[int, ...] = ()
    # apply the timestamp rules (the prompt does not end with <|notimestamps|>)
    timestamps: bool = True
    # the first timestamp is at most this many 0.02 s steps
    max_initial_timestamp_index: int = 50


@dataclass(frozen=True)
class DecodingResult:
    """The chosen hypothesis of a window (prefix tokens included, end of text excluded)."""

    tokens: tuple[int, ...]
    # sum of the log probabilities of the tokens (end of text included, forced prefix excluded)
    sum_logprob: float
    # probability of <|nospeech|> at the <|startoftranscript|> position
    no_speech_prob: float

    @property
    def avg_logprob(self) -> float:
        """As faster-whisper recovers it: sum / (length + 1); NaN for an empty hypothesis, as there."""
        if not self.tokens:
            return float("nan")
        return self.sum_logprob / (len(self.tokens) + 1)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log softmax in float32 (rows of -inf stay -inf)."""
    shifted, lse = _log_softmax_parts(x)
    return shifted - lse


def _log_softmax_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x - row max, log of the shifted row's exp-sum): log_softmax(x) is their difference, bit for bit."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    shifted = x - m
    with np.errstate(divide="ignore"):
        lse = np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return shifted, lse


def beam_candidates(logits: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best flat indices of log_softmax(logits) + scores[:, None] and their values, best first
    (ties: the lower index first), with the values computed exactly as that whole array would hold them.

    Why not rank the whole [beams, vocab] array: only a handful of entries can make the top k. The k-th
    best of a sample of columns bounds the answer from below; only entries at or above that bound (less a
    margin far wider than float32 rounding) get their exact value and a place in the ranking.
    """
    shifted, lse = _log_softmax_parts(logits)
    scores = scores.astype(np.float32)[:, None]
    with np.errstate(invalid="ignore"):  # a row masked whole: -inf - -inf
        sample = (shifted[:, :_SAMPLE_COLUMNS] - lse) + scores
    bound = np.partition(sample.ravel(), -k)[-k] if sample.size >= k else NEG_INF
    if np.isfinite(bound):
        # the margin grows with the magnitudes involved (hopeless beams score -1e10); a row with a -inf
        # score or masked whole gets a NaN or +inf threshold, and no entry passes it (none can rank)
        with np.errstate(invalid="ignore"):
            margin = _BOUND_MARGIN + np.float32(1e-6) * (np.abs(bound) + np.abs(scores) + np.abs(lse))
            threshold = np.where(np.isfinite(lse), (bound - scores + lse) - margin, np.inf)
            flat = np.flatnonzero(shifted >= threshold)  # 2-D nonzero is 10x slower
    else:  # most entries masked: rank every finite one
        flat = np.flatnonzero(np.isfinite(shifted))
    if flat.size < k:  # fewer than k finite entries: rank the whole array
        with np.errstate(invalid="ignore"):
            everything = ((shifted - lse) + scores).ravel()
        top = np.argpartition(-everything, k - 1)[:k]
        top = top[np.lexsort((top, -everything[top]))]
        return top, everything[top]
    rows = flat // logits.shape[-1]
    values = (shifted.ravel()[flat] - lse[rows, 0]) + scores[rows, 0]
    best = np.lexsort((flat, -values))[:k]
    return flat[best], values[best]


def _normalized(score: float, length: int, penalty: float) -> float:
    """CTranslate2's finalize_hypothesis_score with C float semantics for empty hypotheses."""
    denominator = float(length) ** penalty
    if denominator == 0:
        return float("-inf") if score < 0 else float("nan")
    return score / denominator


class LogitFilters:
    """The logits processors of CTranslate2 in its order, applied in place to [rows, vocab] logits.

    `sequences[i]` are the tokens row i produced so far (forced prefix included); `step` is their length.
    """

    def __init__(self, options: DecodingOptions, ids: SpecialIds, sample_begin: int):
        self.options = options
        self.ids = ids
        self.sample_begin = sample_begin
        self._suppress = np.asarray(options.suppress_tokens, dtype=np.int64)
        self._suppress_begin = np.asarray(options.suppress_begin, dtype=np.int64)
        self._max_initial = ids.timestamp_begin + options.max_initial_timestamp_index
        # a caller's suppress_tokens can take away every token the rules leave (EOT, the timestamps,
        # or most of the vocabulary): then no token is left to choose and log-softmax gives NaN
        suppressed = set(options.suppress_tokens)
        self._may_empty = (
            ids.eot in suppressed
            or any(t >= ids.timestamp_begin for t in suppressed)
            or len(suppressed) > ids.n_vocab // 2
        )

    def apply(self, logits: np.ndarray, sequences: Sequence[Sequence[int]], step: int) -> None:
        o = self.options
        if o.repetition_penalty != 1.0 and step > 0:
            for row, seq in enumerate(sequences):
                idx = np.asarray(seq, dtype=np.int64)
                prev = logits[row, idx]
                logits[row, idx] = np.where(
                    prev < 0, prev * o.repetition_penalty, prev / o.repetition_penalty
                )
        if o.no_repeat_ngram_size > 0 and step >= o.no_repeat_ngram_size:
            for row, seq in enumerate(sequences):
                banned = _ngram_banned(seq, o.no_repeat_ngram_size)
                if banned:
                    logits[row, list(banned)] = NEG_INF
        if self._suppress.size:
            logits[:, self._suppress] = NEG_INF
        if self._suppress_begin.size and step == self.sample_begin:
            logits[:, self._suppress_begin] = NEG_INF
        if o.timestamps:
            self._timestamp_rules(logits, sequences, step)
        if self._may_empty and (logits.max(axis=-1) == NEG_INF).any():
            raise OptionsError("suppress_tokens leaves no token the decoder may choose")

    def _timestamp_rules(self, logits: np.ndarray, sequences: Sequence[Sequence[int]], step: int) -> None:
        ids = self.ids
        ts_begin = ids.timestamp_begin
        begin = self.sample_begin
        logits[:, ids.no_timestamps] = NEG_INF
        if step == begin:
            # the window starts with a timestamp, and not a late one
            logits[:, :ts_begin] = NEG_INF
            logits[:, self._max_initial + 1 :] = NEG_INF
            return
        if step < begin:
            return
        check_rows = []
        for row, seq in enumerate(sequences):
            last = seq[step - 1]
            if last >= ts_begin:
                penultimate = seq[step - 2] if step - 1 > begin else last
                if penultimate >= ts_begin:
                    # a pair closed: text must follow
                    logits[row, ts_begin:] = NEG_INF
                else:
                    # an opened pair: a timestamp or the end must follow
                    logits[row, : ids.eot] = NEG_INF
                    check_rows.append(row)
            else:
                check_rows.append(row)
            # timestamps never go back, and after text they go forward (CTranslate2 masks up to the
            # last one inclusive: no zero-length segment); only an opened pair may close on its own
            for t in range(step - 1, begin - 1, -1):
                if seq[t] >= ts_begin:
                    end = seq[t] if t == step - 1 else seq[t] + 1
                    logits[row, ts_begin:end] = NEG_INF
                    break
        if check_rows:
            # "the timestamps' total probability beats any text token": both sides of CTranslate2's
            # comparison are log-softmaxes of one row, so its normaliser cancels and raw logits will
            # do (a logsumexp over the timestamps instead of a log-softmax over the vocabulary)
            # (over every row, on views: cheaper than copying out the rows to check)
            with np.errstate(divide="ignore", invalid="ignore"):
                ts = logits[:, ts_begin:]
                ts_max = np.max(ts, axis=-1, keepdims=True)
                safe = np.where(np.isfinite(ts_max), ts_max, 0)
                ts_lse = (np.log(np.sum(np.exp(ts - safe), axis=-1, keepdims=True)) + safe)[:, 0]
            text_max = np.max(logits[:, :ts_begin], axis=-1)
            for row in check_rows:
                if ts_lse[row] > text_max[row]:
                    logits[row, :ts_begin] = NEG_INF


def _ngram_banned(seq: Sequence[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already in `seq` (CTranslate2's NoRepeatNgram)."""
    tail = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
    banned = set()
    for i in range(len(seq) - n + 1):
        if tuple(seq[i : i + n - 1]) == tail:
            banned.add(seq[i + n - 1])
    return banned


def _sot_index_and_prompt_length(prompt: Sequence[int], ids: SpecialIds) -> tuple[int, int]:
    """Where <|startoftranscript|> is, and where the task tokens after it end (whisper.cc)."""
    try:
        sot_index = list(prompt).index(ids.sot)
    except ValueError:
        raise ValueError("<|startoftranscript|> token was not found in the prompt") from None
    index = sot_index
    while index < len(prompt) and ids.sot <= prompt[index] <= ids.no_timestamps:
        index += 1
    return sot_index, index


class WindowDecoder:
    """Decodes one window's prompt against its encoder output; one instance per call, never shared."""

    def __init__(
        self,
        model: OnnxWhisper,
        ids: SpecialIds,
        rng: np.random.Generator | None = None,
        stop: Callable[[], bool] | None = None,
    ):
        self.model = model
        self.ids = ids
        self.rng = rng or np.random.default_rng()
        self.stop = stop

    def _check_stop(self, step: int) -> None:
        """Raise Stopped every STOP_CHECK_STEPS steps once `stop()` is true: a window's decoding (up to
        224 steps, times the temperatures tried) ran on for seconds for a caller that had gone."""
        if self.stop is not None and step % STOP_CHECK_STEPS == 0 and self.stop():
            raise Stopped("the caller has gone")

    def decode(self, cross: CrossKV, prompt: Sequence[int], options: DecodingOptions) -> DecodingResult:
        """The best hypothesis for `prompt` (faster-whisper's get_prompt output) on `cross` (batch 1)."""
        prompt = [int(t) for t in prompt]
        sot_index, prompt_length = _sot_index_and_prompt_length(prompt, self.ids)
        prefix = prompt[prompt_length:]
        # feed up to <|startoftranscript|>: its logits give the no-speech probability
        logits, cache = self.model.decode(np.asarray([prompt[: sot_index + 1]]), None, cross)
        probs = np.exp(log_softmax(logits[:1].astype(np.float32)))
        no_speech_prob = float(probs[0, self.ids.no_speech])
        rest = prompt[sot_index + 1 :]
        if rest:
            logits, cache = self.model.decode(np.asarray([rest]), cache, cross)
        # the filters see the forced prefix as generated tokens (sample_begin 0): with a prefix,
        # faster-whisper gets no forced timestamp after it, and blank/end are only suppressed at the
        # (forced) first step
        filters = LogitFilters(options, self.ids, sample_begin=0)
        if options.beam_size > 1 and options.temperature == 0:
            tokens, score = self._beam_search(cross, cache, logits, prefix, options, filters)
        else:
            tokens, score = self._sample(cross, cache, logits, prefix, options, filters)
        return DecodingResult(tuple(tokens), score, no_speech_prob)

    def _sample(self, cross, cache, logits, prefix, options, filters) -> tuple[list[int], float]:
        """Greedy (temperature 0) or sampling of num_hypotheses independent rows; the best by score."""
        eot = self.ids.eot
        n = options.num_hypotheses if options.temperature > 0 else 1
        if n > 1:
            # the rows share the window's cross K/V (rows of one window are contiguous)
            cache = cache.reorder(np.zeros(n, dtype=np.int64))
            logits = np.repeat(logits, n, axis=0)
        seqs = [list(prefix) for _ in range(n)]
        scores = [0.0] * n
        alive = list(range(n))  # rows still decoding, in cache/logits order
        step = len(prefix)
        while True:
            logits = np.array(logits, dtype=np.float32, copy=True)
            filters.apply(logits, [seqs[row] for row in alive], step)
            logprobs = log_softmax(logits)
            if options.temperature > 0:
                choice = self._draw(logprobs / options.temperature)
            else:
                choice = np.argmax(logprobs, axis=-1)
            last_step = step + 1 >= options.max_length
            keep = []
            for position, row in enumerate(alive):
                token = int(choice[position])
                scores[row] += float(logprobs[position, token])
                if token == eot:
                    continue
                seqs[row].append(token)
                if not last_step:
                    keep.append(position)
            if not keep:
                break
            # finished rows leave the batch, as in CTranslate2
            if len(keep) != len(alive):
                cache = cache.reorder(keep)
                alive = [alive[p] for p in keep]
            feed = np.asarray([[seqs[row][-1]] for row in alive], dtype=np.int64)
            self._check_stop(step)
            logits, cache = self.model.decode(feed, cache, cross)
            step += 1
        best = max(range(n), key=lambda r: _normalized(scores[r], len(seqs[r]), options.length_penalty))
        return seqs[best], scores[best]

    def _draw(self, scaled: np.ndarray) -> np.ndarray:
        probs = np.exp(log_softmax(scaled.astype(np.float64)))
        probs /= probs.sum(axis=-1, keepdims=True)
        return np.array([self.rng.choice(probs.shape[1], p=row) for row in probs])

    def _beam_search(self, cross, cache, logits, prefix, options, filters) -> tuple[list[int], float]:
        """CTranslate2's BeamSearch.search for one batch item."""
        eot = self.ids.eot
        beam = options.beam_size
        n_candidates = 2 * beam
        max_finished = int(np.round(beam * options.patience))
        vocab = logits.shape[-1]
        seqs = [list(prefix)]
        scores = np.zeros(1, dtype=np.float32)
        finished: list[tuple[float, list[int]]] = []
        step = len(prefix)
        while True:
            logits = np.array(logits, dtype=np.float32, copy=True)
            filters.apply(logits, seqs, step)
            top, cand_scores = beam_candidates(logits, scores, n_candidates)
            origins = top // vocab
            words = top % vocab
            if prefix and step == len(prefix):
                # CTranslate2 penalises <|endoftext|> in the secondary beams of the first free step
                for k in range(1, n_candidates):
                    if words[k] == eot:
                        words[k] = 0
                        cand_scores[k] = _HOPELESS
            last_step = step + 1 >= options.max_length
            keep = []
            secondary = beam
            for k in range(beam):
                chosen = k
                if words[k] == eot or last_step:
                    hyp = seqs[origins[k]] + ([] if words[k] == eot else [int(words[k])])
                    finished.append((float(cand_scores[k]), hyp))
                    for j in range(secondary, n_candidates):
                        if words[j] != eot:
                            chosen = j
                            secondary = j + 1
                            break
                keep.append(chosen)
            if last_step or len(finished) >= max_finished:
                break
            keep = np.asarray(keep)
            seqs = [seqs[origins[j]] + [int(words[j])] for j in keep]
            scores = cand_scores[keep]
            cache = cache.reorder(origins[keep])
            self._check_stop(step)
            logits, cache = self.model.decode(words[keep][:, None].astype(np.int64), cache, cross)
            step += 1
        ranked = sorted(
            finished,
            key=lambda f: _normalized(f[0], len(f[1]), options.length_penalty),
            reverse=True,
        )
        score, tokens = ranked[0]
        return tokens, score
