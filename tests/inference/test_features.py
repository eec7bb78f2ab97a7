"""inference.features against faster-whisper's FeatureExtractor on the same waveforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.audio import decode_audio
from inference.features import N_FRAMES, FeatureExtractor, pad_or_trim
from tests import media
from tests.reference.runner import run_reference


@pytest.fixture(scope="module")
def waves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our decode of every shared clip plus edge-case signals, saved for the reference to read."""
    folder = tmp_path_factory.mktemp("waves")
    signals = {name: decode_audio(media.clip_path(name)) for name in media.CLIPS}
    signals["short_0.1s"] = media.sine(0.1)
    signals["silence"] = media.silence(2.0)
    paths = {}
    for name, samples in signals.items():
        paths[name] = folder / f"{name}.npy"
        np.save(paths[name], samples)
    return paths


@pytest.fixture(scope="module")
def fw_mels(
    waves: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], np.ndarray]:
    out = tmp_path_factory.mktemp("fw_mels")
    mels = {}
    for n_mels in (80, 128):
        run_reference("fw_features.py", "features", out, "--n-mels", n_mels, *waves.values())
        for name, path in waves.items():
            mels[name, n_mels] = np.load(out / f"{path.stem}.mel{n_mels}.npy")
    return mels


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("name", [*media.CLIPS, "short_0.1s", "silence"])
def test_log_mel_matches_faster_whisper(name: str, n_mels: int, waves: dict, fw_mels: dict) -> None:
    ours = FeatureExtractor(n_mels)(np.load(waves[name]))
    reference = fw_mels[name, n_mels]
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-3  # measured: about 1.2e-7


def test_frame_count_and_padding() -> None:
    extractor = FeatureExtractor()
    assert extractor(np.zeros(16000, np.float32)).shape == (80, 101)  # (n + 160) // 160
    assert extractor(np.zeros(16000, np.float32), padding=0).shape == (80, 100)
    assert extractor(np.zeros(0, np.float32)).shape == (80, 1)
    with pytest.raises(ValueError):
        extractor(np.zeros((2, 16000), np.float32))


def test_long_audio_is_the_same_in_blocks_as_at_once() -> None:
    """Blocking the STFT must not change the result (blocks are 6000 frames)."""
    audio = media.noise(130.0, seed=3)
    extractor = FeatureExtractor()
    whole = extractor(audio)
    assert whole.shape == (80, 13001)
    start = 60 * 16000  # frame 6000, a block boundary; noise never reaches the "max - 8" clamp
    part = extractor(audio[start : start + 30 * 16000])
    # frame j of `part` is frame 6000 + j of `whole` once its window clears the reflect padding (j >= 2)
    np.testing.assert_allclose(whole[:, 6002:8990], part[:, 2:2990], atol=2e-5)


def test_pad_or_trim_to_the_encoder_window() -> None:
    mel = np.ones((80, 1234), np.float32)
    padded = pad_or_trim(mel)
    assert padded.shape == (80, N_FRAMES) and padded[:, 1234:].sum() == 0
    assert pad_or_trim(np.ones((80, 4000), np.float32)).shape == (80, N_FRAMES)
