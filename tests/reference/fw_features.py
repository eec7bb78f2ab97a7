"""Reference front end: faster-whisper's decode_audio and FeatureExtractor, run under .venv-ref only.

    .venv-ref/bin/python tests/reference/fw_features.py decode OUT_DIR MEDIA...   -> OUT_DIR/<name>.npy
    .venv-ref/bin/python tests/reference/fw_features.py features OUT_DIR --n-mels 80 WAVE.npy...
        -> OUT_DIR/<stem>.mel<n>.npy (log-mel of each float32 waveform, as faster-whisper computes it)

The product never imports this; tests run it in a subprocess and compare the .npy files.
"""

import argparse
from pathlib import Path

import numpy as np
from faster_whisper.audio import decode_audio
from faster_whisper.feature_extractor import FeatureExtractor


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode")
    decode.add_argument("out_dir", type=Path)
    decode.add_argument("media", nargs="+", type=Path)
    features = sub.add_parser("features")
    features.add_argument("out_dir", type=Path)
    features.add_argument("--n-mels", type=int, default=80)
    features.add_argument("waves", nargs="+", type=Path)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "decode":
        for path in args.media:
            np.save(args.out_dir / f"{path.name}.npy", decode_audio(str(path)))
    else:
        extractor = FeatureExtractor(feature_size=args.n_mels)
        for path in args.waves:
            mel = extractor(np.load(path))
            np.save(args.out_dir / f"{path.stem}.mel{args.n_mels}.npy", mel.astype(np.float32))


if __name__ == "__main__":
    main()
