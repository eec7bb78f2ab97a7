"""The reference for bench/load.py: a bare Flask endpoint returning a small JSON, nothing else."""

from __future__ import annotations

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/ping")
def ping():
    return jsonify({"id": "txn_reference", "status": "completed", "text": "hello world"})
