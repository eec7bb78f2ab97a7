"""Reference tokenizer: faster-whisper's Tokenizer, run under .venv-ref only.

    .venv-ref/bin/python tests/reference/fw_tokenizer.py REQUESTS.json   -> JSON list on stdout

REQUESTS: a list of {"tokenizer_json": path, "multilingual": bool, "task": str, "language": str,
          "texts": [str], "token_lists": [[int]]}
Answer per request: sot_sequence, special ids, non_speech_tokens, encode(text) per text, and per token
list decode, decode_with_timestamps and split_to_word_tokens.
"""

import json
import sys
from pathlib import Path

import tokenizers
from faster_whisper.tokenizer import Tokenizer

SPECIAL = ("sot", "eot", "sot_prev", "sot_lm", "no_speech", "no_timestamps", "timestamp_begin")


def answer(request: dict) -> dict:
    hf = tokenizers.Tokenizer.from_file(request["tokenizer_json"])
    tokenizer = Tokenizer(
        hf, request["multilingual"], task=request.get("task"), language=request.get("language")
    )
    token_lists = request["token_lists"]
    return {
        "sot_sequence": list(tokenizer.sot_sequence),
        "special": {name: getattr(tokenizer, name) for name in SPECIAL},
        "non_speech_tokens": list(tokenizer.non_speech_tokens),
        "encode": [tokenizer.encode(text) for text in request["texts"]],
        "decode": [tokenizer.decode(tokens) for tokens in token_lists],
        "decode_with_timestamps": [tokenizer.decode_with_timestamps(tokens) for tokens in token_lists],
        "split_to_word_tokens": [tokenizer.split_to_word_tokens(tokens) for tokens in token_lists],
    }


def main() -> None:
    requests = json.loads(Path(sys.argv[1]).read_text())
    json.dump([answer(request) for request in requests], sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
