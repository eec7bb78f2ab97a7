"""Whisper's log-mel spectrogram, computed as faster-whisper's FeatureExtractor does (numpy only).

Same framing (reflect padding of n_fft/2, 160 zero samples appended, last STFT frame dropped), same Slaney
mel filters (as librosa), same clamp to 8 log10 units below the global maximum. Frames are a strided view and
the work is done in blocks of frames in float32, so long audio needs little memory beyond the output.
"""

from __future__ import annotations

import numpy as np

SAMPLING_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30  # seconds of audio the encoder sees at once
N_SAMPLES = CHUNK_LENGTH * SAMPLING_RATE
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
_BLOCK_FRAMES = 6000  # frames transformed at once: bounds the temporary STFT memory


def mel_filters(n_mels: int, sampling_rate: int = SAMPLING_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filters [n_mels, n_fft // 2 + 1] (whisper's mel_filters.npz).

    The same numbers as `librosa.filters.mel(sr, n_fft, n_mels)` (max diff 4e-9), written out in numpy
    because importing librosa.filters pulls in scipy.signal: about 2 s at every process start.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sampling_rate)
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sampling_rate / 2), n_mels + 2)
    freqs = _mel_to_hz(mels)
    widths = np.diff(freqs)
    ramps = freqs[:, np.newaxis] - fft_freqs[np.newaxis, :]
    lower = -ramps[:-2] / widths[:-1, np.newaxis]
    upper = ramps[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2:] - freqs[:-2]))[:, np.newaxis]  # equal area per band
    return weights.astype(np.float32)


# Slaney's mel scale: linear below 1 kHz, logarithmic above
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    return hz / _F_SP if hz < _MIN_LOG_HZ else _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    return np.where(
        mels < _MIN_LOG_MEL, _F_SP * mels, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL))
    )


class FeatureExtractor:
    """Log-mel features [n_mels, frames] of 16 kHz float32 audio; frames = (len(audio) + padding) // 160.

    Stateless after construction, so one instance can be shared by threads.
    """

    def __init__(self, n_mels: int = 80, sampling_rate: int = SAMPLING_RATE):
        self.n_mels = n_mels
        self.sampling_rate = sampling_rate
        self.n_fft = N_FFT
        self.hop_length = HOP_LENGTH
        self.time_per_frame = HOP_LENGTH / sampling_rate
        self.mel_filters = mel_filters(n_mels, sampling_rate, N_FFT)
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)

    def __call__(self, waveform: np.ndarray, padding: int = HOP_LENGTH) -> np.ndarray:
        """Log-mel of `waveform` (1-D float), `padding` zero samples appended first (as faster-whisper)."""
        audio = np.asarray(waveform, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"waveform must be 1-D, not {audio.shape}")
        if padding:
            audio = np.pad(audio, (0, padding))
        half = N_FFT // 2
        if audio.shape[0] == 0:
            return np.zeros((self.n_mels, 0), dtype=np.float32)
        audio = np.pad(audio, (half, half), mode="reflect")
        # torch.stft(center=True) frames, minus the last one (whisper drops it)
        n_frames = 1 + (audio.shape[0] - N_FFT) // HOP_LENGTH - 1
        frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP_LENGTH][:n_frames]
        log_spec = np.empty((self.n_mels, n_frames), dtype=np.float32)
        for start in range(0, n_frames, _BLOCK_FRAMES):
            block = frames[start : start + _BLOCK_FRAMES] * self._window
            spectrum = np.fft.rfft(block, axis=-1)
            power = spectrum.real**2 + spectrum.imag**2
            mel = power @ self.mel_filters.T  # [frames, n_mels]
            np.log10(np.maximum(mel, 1e-10), out=mel)
            log_spec[:, start : start + _BLOCK_FRAMES] = mel.T
        if n_frames:
            np.maximum(log_spec, log_spec.max() - 8.0, out=log_spec)
        log_spec += 4.0
        log_spec /= 4.0
        return log_spec


def pad_or_trim(mel: np.ndarray, length: int = N_FRAMES, *, axis: int = -1) -> np.ndarray:
    """Cut or zero-pad `mel` to `length` along `axis` (3000 frames = the encoder's 30 s window)."""
    size = mel.shape[axis]
    if size > length:
        return mel.take(np.arange(length), axis=axis)
    if size < length:
        widths = [(0, 0)] * mel.ndim
        widths[axis] = (0, length - size)
        return np.pad(mel, widths)
    return mel
