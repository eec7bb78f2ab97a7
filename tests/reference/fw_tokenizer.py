"""Reference tokenizer: faster-whisper's Tokenizer, run under .venv-ref only.

    .venv-ref/bin/python tests/reference/fw_tokenizer.py REQUEST.json   -> JSON on stdout

REQUEST: {"tokenizer_json": path, "multilingual": bool, "task": str, "language": str,
          "texts": [str], "token_lists": [[int]]}
Answer: sot_sequence, special ids, non_speech_tokens, encode(text) per text, and per token list
decode, decode_with_timestamps and split_to_word_tokens.
"""

import json
import sys
from pathlib import Path

import tokenizers
from faster_whisper.tokenizer import Tokenizer


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    hf = tokenizers.Tokenizer.from_file(request["tokenizer_json"])
    tokenizer = Tokenizer(
        hf, request["multilingual"], task=request.get("task"), language=request.get("language")
    )
    names = ("sot", "eot", "sot_prev", "sot_lm", "no_speech", "no_timestamps", "timestamp_begin")
    answer = {
        "sot_sequence": list(tokenizer.sot_sequence),
        "special": {name: getattr(tokenizer, name) for name in names},
        "non_speech_tokens": list(tokenizer.non_speech_tokens),
        "encode": [tokenizer.encode(text) for text in request["texts"]],
        "decode": [tokenizer.decode(tokens) for tokens in request["token_lists"]],
        "decode_with_timestamps": [tokenizer.decode_with_timestamps(t) for t in request["token_lists"]],
        "split_to_word_tokens": [tokenizer.split_to_word_tokens(t) for t in request["token_lists"]],
    }
    json.dump(answer, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
