"""Reference outputs from CTranslate2 / faster-whisper, run ONLY under .venv-ref in a subprocess.

usage: .venv-ref/bin/python tests/reference/ct2_reference.py AUDIO CT2_MODEL_DIR OUT_DIR
writes OUT_DIR/mel.npy [1, n_mels, 3000] (first 30 s window), OUT_DIR/encoder.npy [1, 1500, d]
(the encoder's hidden state) and OUT_DIR/reference.json {"greedy_tokens": [...], "beam5_tokens": [...]}
(generation with prompt [sot, no_timestamps], the model's suppress_ids and suppress_blank).
"""

import json
import sys
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper.audio import decode_audio, pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor


def main() -> None:
    audio_path, model_dir, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32", intra_threads=2)
    extractor = FeatureExtractor(feature_size=model.n_mels)
    audio = decode_audio(audio_path, sampling_rate=extractor.sampling_rate)
    mel = pad_or_trim(extractor(audio))[None].astype(np.float32)
    np.save(out_dir / "mel.npy", mel)
    features = ctranslate2.StorageView.from_array(mel)
    encoded = model.encode(features, to_cpu=True)
    np.save(out_dir / "encoder.npy", np.array(encoded))
    tokenizer = json.loads((Path(model_dir) / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    prompt = [ids["<|startoftranscript|>"], ids["<|notimestamps|>"]]
    result = {}
    for key, beam in (("greedy_tokens", 1), ("beam5_tokens", 5)):
        out = model.generate(features, [prompt], beam_size=beam, max_length=448, return_scores=True)
        result[key] = out[0].sequences_ids[0]
    result["prompt"] = prompt
    (out_dir / "reference.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
