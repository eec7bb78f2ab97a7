"""`OnnxWhisper`: the exported whisper model behind ONNX Runtime sessions (encode, decode step, align).

Sessions are built once and only read afterwards, so one instance serves many threads; the KV cache
is a value object returned by each step, never mutated in place.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from cliptext.errors import ErrorCode
from inference.config import ModelConfig
from inference.onnx_decoder import cache_names, cross_input_names
from inference.types import EngineError

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def has_nvidia_device() -> bool:
    """Whether this machine exposes an NVIDIA GPU (its driver's control node), whatever the installed
    onnxruntime lists: onnxruntime-gpu names the CUDA provider on machines without a GPU too."""
    return Path("/dev/nvidiactl").exists()


@dataclass(frozen=True)
class CrossKV:
    """Cross-attention keys/values of every decoder layer: [n_text_layer, B, n_text_head, 1500, head_dim]."""

    k: np.ndarray
    v: np.ndarray
    # per-layer copies on the GPU, made on the first CUDA step: without them every decoder step would
    # copy the whole window's K/V (18 MB for tiny) from host to device again
    _on_device: list = field(default_factory=list, compare=False, repr=False)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def device_inputs(self, names: list[tuple[str, str]], device_id: int) -> dict[str, ort.OrtValue]:
        """{input name: OrtValue on CUDA device `device_id`}, uploaded once per window."""
        if not self._on_device:
            values = {}
            for i, (k_name, v_name) in enumerate(names):
                values[k_name] = ort.OrtValue.ortvalue_from_numpy(
                    np.ascontiguousarray(self.k[i]), "cuda", device_id
                )
                values[v_name] = ort.OrtValue.ortvalue_from_numpy(
                    np.ascontiguousarray(self.v[i]), "cuda", device_id
                )
            self._on_device.append(values)
        return self._on_device[0]

    def repeat(self, n: int) -> CrossKV:
        """Each batch item repeated n times in a row (b0 b0 b0 b1 b1 b1): one copy per beam."""
        if n == 1:
            return self
        return CrossKV(np.repeat(self.k, n, axis=1), np.repeat(self.v, n, axis=1))

    def select(self, indices) -> CrossKV:
        """The batch items at `indices` (e.g. the windows still being decoded)."""
        idx = np.asarray(indices, dtype=np.int64)
        return CrossKV(self.k[:, idx], self.v[:, idx])


@dataclass(frozen=True)
class KVCache:
    """Self-attention K/V of the tokens seen so far, one array per decoder layer:
    k[i], v[i] are [B, n_text_head, length, head_dim]."""

    k: tuple[np.ndarray, ...]
    v: tuple[np.ndarray, ...]

    @property
    def length(self) -> int:
        return self.k[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @classmethod
    def empty(cls, config: ModelConfig, batch_size: int) -> KVCache:
        shape = (batch_size, config.n_text_head, 0, config.head_dim)
        layers = tuple(np.zeros(shape, np.float32) for _ in range(config.n_text_layer))
        return cls(layers, layers)

    def reorder(self, indices) -> KVCache:
        """The cache of the hypotheses at `indices` (beam search keeps or duplicates hypotheses)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == self.batch_size and np.array_equal(idx, np.arange(idx.size)):
            return self  # every hypothesis kept in place: no copy of the whole cache
        return KVCache(tuple(k[idx] for k in self.k), tuple(v[idx] for v in self.v))


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(threads, 0)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # idle pool threads sleep instead of spinning: on a shared CPU a spinning wait between the many small
    # decoder ops burns the cores other requests (and processes) need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _open_session(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """A session for one graph of the export; a missing or damaged file is an EngineError naming it, so
    the CLI prints one line and the server reports why it cannot load instead of an onnxruntime error."""
    if not path.is_file():
        raise EngineError(ErrorCode.INTERNAL, f"{path}: missing from the exported model (export it again)")
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
        reason = str(exc).rsplit("failed:", 1)[-1].strip()
        raise EngineError(
            ErrorCode.INTERNAL, f"{path}: cannot be loaded, damaged or not an ONNX model ({reason})"
        ) from exc


def _quiet_blas() -> None:
    """numpy's BLAS to one thread, for the whole process: after each call (the mel filterbank product)
    OpenBLAS's idle workers spin for tens of ms on the cores ONNX Runtime's pool is about to need
    (measured: the next encoder run took 125 ms instead of 80 with 2 threads)."""
    threadpool_limits(limits=1, user_api="blas")


class OnnxWhisper:
    """Whisper encoder/decoder/aligner sessions for one exported model directory."""

    def __init__(
        self, model_dir: str | Path, precision: str = "auto", device: str = "auto", threads: int = 0
    ) -> None:
        self.model_dir = Path(model_dir)
        try:
            self.config = ModelConfig.load(self.model_dir)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise EngineError(ErrorCode.INTERNAL, f"{self.model_dir}: not an exported model ({exc})") from exc
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
        if precision not in ("auto", "fp32", "int8", "fp16"):
            raise ValueError(f"precision must be auto, fp32, int8 or fp16, not {precision!r}")
        want_cuda = device != "cpu" and CUDA in ort.get_available_providers()
        if device == "cuda" and not want_cuda:
            log.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider; using CPU")
        self.precision = self._pick_precision(precision, want_cuda)
        _quiet_blas()
        providers = [CUDA, CPU] if want_cuda else [CPU]
        self._options = _session_options(threads)
        if want_cuda and device == "auto":
            # a CPU-only machine with onnxruntime-gpu: the failed CUDA start is expected, keep it quiet
            ort.set_default_logger_severity(4)
        try:
            self._encoder = self._session("encoder", providers)
        finally:
            ort.set_default_logger_severity(2)
        self.provider = self._encoder.get_providers()[0]
        self._device_id = int(self._encoder.get_provider_options().get(CUDA, {}).get("device_id", 0) or 0)
        if want_cuda and self.provider != CUDA:
            report = log.warning if device == "cuda" else log.info
            report("CUDAExecutionProvider could not be created; using CPU")
            if precision == "auto":
                self.precision = self._pick_precision("auto", False)
                self._encoder = self._session("encoder", [CPU])
            providers = [CPU]
        self._providers = providers
        self._decoder = self._session("decoder", providers)
        # the decoder's own session decides: its CUDA start can fail (GPU memory) where the encoder's did not
        self._decoder_on_cuda = self._decoder.get_providers()[0] == CUDA
        n_layer = self.config.n_text_layer
        self._cross_names = cross_input_names(n_layer)
        self._self_names = cache_names(n_layer, "self")
        presents = cache_names(n_layer, "present")
        self._decoder_outputs = ["logits"] + [k for k, _ in presents] + [v for _, v in presents]
        self._aligner: ort.InferenceSession | None = None  # loaded on first use: word timestamps only
        self._aligner_lock = threading.Lock()
        log.info("whisper %s loaded: %s on %s", self.config.name, self.precision, self.provider)

    def _pick_precision(self, precision: str, cuda: bool) -> str:
        available = self.config.precisions
        if precision == "auto":
            precision = "fp16" if cuda and "fp16" in available else "fp32"
        if precision not in available:
            raise EngineError(
                ErrorCode.INTERNAL, f"{self.model_dir} has no {precision} export (has {', '.join(available)})"
            )
        return precision

    def _session(self, part: str, providers: list[str]) -> ort.InferenceSession:
        return _open_session(self.model_dir / f"{part}.{self.precision}.onnx", self._options, providers)

    def _load_aligner(self) -> ort.InferenceSession:
        with self._aligner_lock:
            if self._aligner is None:
                path = self.model_dir / "aligner.fp32.onnx"
                self._aligner = _open_session(path, self._options, self._providers)
            return self._aligner

    def encode(self, mel: np.ndarray) -> CrossKV:
        """mel float32 [B, n_mels, 3000] (or [n_mels, 3000]) -> cross-attention K/V for every layer."""
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim == 2:
            mel = mel[None]
        k, v = self._encoder.run(None, {"mel": np.ascontiguousarray(mel)})
        return CrossKV(k, v)

    def decode(self, tokens, cache: KVCache | None, cross: CrossKV) -> tuple[np.ndarray, KVCache]:
        """tokens int64 [B, S] (new tokens only) -> (logits [B, n_vocab] of the last position, new cache)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if cache is None:
            cache = KVCache.empty(self.config, tokens.shape[0])
        if tokens.shape[0] % cross.batch_size or cache.batch_size != tokens.shape[0]:
            raise ValueError(
                f"batch mismatch: tokens {tokens.shape[0]} cache {cache.batch_size} cross {cross.batch_size}"
            )
        feed = {"tokens": tokens}
        for i, (k_name, v_name) in enumerate(self._self_names):
            feed[k_name] = cache.k[i]
            feed[v_name] = cache.v[i]
        if self._decoder_on_cuda:
            outputs = self._run_on_cuda(feed, cross.device_inputs(self._cross_names, self._device_id))
        else:
            for i, (k_name, v_name) in enumerate(self._cross_names):
                feed[k_name] = cross.k[i]  # contiguous views: no copy
                feed[v_name] = cross.v[i]
            outputs = self._decoder.run(self._decoder_outputs, feed)
        n = self.config.n_text_layer
        return outputs[0], KVCache(tuple(outputs[1 : 1 + n]), tuple(outputs[1 + n :]))

    def _run_on_cuda(
        self, feed: dict[str, np.ndarray], on_device: dict[str, ort.OrtValue]
    ) -> list[np.ndarray]:
        binding = self._decoder.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        for name, value in on_device.items():
            binding.bind_ortvalue_input(name, value)
        for name in self._decoder_outputs:
            binding.bind_output(name, "cpu")
        self._decoder.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def warm_up(self, beam_sizes: tuple[int, ...] = (1, 5)) -> None:
        """Run, on the calling thread, every decoder shape a transcription at these beam sizes can give:
        prompts of 1 to n_text_ctx / 2 tokens, then one-token steps up to n_text_ctx cached tokens.

        Why: on CUDA a thread's first run of a session at a new shape is slow (an H200 thread new to
        multilingual.mp3's lengths decoded it at 8-12 audio s/s, then at 80-100), and the decoder's
        attention length changes every step. Values do not matter here, only shapes.
        """
        cross = self.encode(np.zeros((1, self.config.n_mels, 3000), np.float32))
        n_ctx = self.config.n_text_ctx
        sot = self.config.sot
        for length in range(1, n_ctx // 2 + 1):
            self.decode(np.full((1, length), sot, np.int64), None, cross)
        for beams in beam_sizes:
            step = np.full((beams, 1), sot, np.int64)
            _, cache = self.decode(step, None, cross)
            while cache.length < n_ctx:
                _, cache = self.decode(step, cache, cross)

    def align(self, tokens, cross: CrossKV) -> np.ndarray:
        """Cross-attention weights of the alignment heads for a whole sequence: [n_heads, S, 1500]."""
        aligner = self._load_aligner()
        tokens = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        (weights,) = aligner.run(None, {"tokens": tokens, "cross_k": cross.k, "cross_v": cross.v})
        return weights
