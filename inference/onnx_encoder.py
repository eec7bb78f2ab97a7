"""Build the whisper encoder as an ONNX graph: mel -> every decoder layer's cross-attention K/V.

Projecting the cross K/V here (once per 30 s window) keeps that work out of every decoder step.
"""

from __future__ import annotations

import numpy as np
import onnx

from inference.config import ModelConfig
from inference.ct2_reader import CT2Model
from inference.onnx_builder import FLOAT, MS_DOMAIN, GraphBuilder


def split_heads(g: GraphBuilder, x: str, n_head: int, head_dim: int) -> str:
    """[B, T, H*D] -> [B, H, T, D]."""
    x = g.op("Reshape", [x, g.const([0, 0, n_head, head_dim])])
    return g.op("Transpose", [x], perm=[0, 2, 1, 3])


def merge_heads(g: GraphBuilder, x: str) -> str:
    """[B, H, T, D] -> [B, T, H*D]."""
    x = g.op("Transpose", [x], perm=[0, 2, 1, 3])
    return g.op("Reshape", [x, g.const([0, 0, -1])])


def encoder_self_attention(
    g: GraphBuilder, m: CT2Model, x: str, prefix: str, cfg: ModelConfig, use_mha: bool = True
) -> str:
    """Bidirectional self-attention with the fused QKV projection."""
    d, n_head, hd = cfg.n_audio_state, cfg.n_audio_head, cfg.n_audio_state // cfg.n_audio_head
    weight = m.get(prefix + "/linear_0/weight")  # [3d, d]
    bias = m.get(prefix + "/linear_0/bias")
    if use_mha:
        qkv = g.linear(x, weight, None, prefix + "/qkv")
        q, k, v = g.op("Split", [qkv, g.const([d, d, d])], n_out=3, axis=-1)
        attn = g.op(
            "MultiHeadAttention",
            [q, k, v, g.weight(prefix + "/qkv.bias", bias)],
            domain=MS_DOMAIN,
            num_heads=n_head,
        )
    else:
        qkv = g.linear(x, weight, bias, prefix + "/qkv")
        q, k, v = (
            split_heads(g, t, n_head, hd) for t in g.op("Split", [qkv, g.const([d, d, d])], n_out=3, axis=-1)
        )
        q = g.op("Mul", [q, g.const(hd**-0.5, np.float32)])
        scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        attn = merge_heads(g, g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v]))
    return g.linear(
        attn, m.get(prefix + "/linear_1/weight"), m.get(prefix + "/linear_1/bias"), prefix + "/out"
    )


def feed_forward(g: GraphBuilder, m: CT2Model, x: str, prefix: str) -> str:
    h = g.linear(x, m.get(prefix + "/linear_0/weight"), m.get(prefix + "/linear_0/bias"), prefix + "/fc1")
    h = g.gelu(h)
    return g.linear(h, m.get(prefix + "/linear_1/weight"), m.get(prefix + "/linear_1/bias"), prefix + "/fc2")


def residual_block(g: GraphBuilder, m: CT2Model, x: str, prefix: str, body) -> str:
    """x + body(layer_norm(x)) - whisper is pre-norm."""
    h = g.layer_norm(
        x, m.get(prefix + "/layer_norm/gamma"), m.get(prefix + "/layer_norm/beta"), prefix + "/ln"
    )
    return g.op("Add", [x, body(h)])


def build_encoder(m: CT2Model, cfg: ModelConfig, use_mha: bool = True) -> onnx.ModelProto:
    g = GraphBuilder("whisper_encoder")
    mel = g.input("mel", FLOAT, ["batch", cfg.n_mels, 2 * cfg.n_audio_ctx])
    x = g.op(
        "Conv",
        [
            mel,
            g.weight("encoder/conv1/weight", m.get("encoder/conv1/weight")),
            g.weight("encoder/conv1/bias", m.get("encoder/conv1/bias")),
        ],
        kernel_shape=[3],
        pads=[1, 1],
    )
    x = g.gelu(x)
    x = g.op(
        "Conv",
        [
            x,
            g.weight("encoder/conv2/weight", m.get("encoder/conv2/weight")),
            g.weight("encoder/conv2/bias", m.get("encoder/conv2/bias")),
        ],
        kernel_shape=[3],
        pads=[1, 1],
        strides=[2],
    )
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [B, 1500, d]
    x = g.op("Add", [x, g.weight("encoder/positions", m.get("encoder/position_encodings/encodings"))])

    for i in range(cfg.n_audio_layer):
        p = f"encoder/layer_{i}"
        x = residual_block(
            g,
            m,
            x,
            p + "/self_attention",
            lambda h, p=p: encoder_self_attention(g, m, h, p + "/self_attention", cfg, use_mha),
        )
        x = residual_block(g, m, x, p + "/ffn", lambda h, p=p: feed_forward(g, m, h, p + "/ffn"))
    x = g.layer_norm(x, m.get("encoder/layer_norm/gamma"), m.get("encoder/layer_norm/beta"), "encoder/ln")

    # Cross-attention K/V of every decoder layer, stacked: [L, B, H, 1500, D].
    ks, vs = [], []
    d, hd = cfg.n_text_state, cfg.head_dim
    for i in range(cfg.n_text_layer):
        p = f"decoder/layer_{i}/attention/linear_1"
        weight, bias = m.get(p + "/weight"), m.get(p + "/bias")  # [2d, d]: key then value
        kv = g.linear(x, weight, bias, p)
        k, v = g.op("Split", [kv, g.const([d, d])], n_out=2, axis=-1)
        for t, out in ((k, ks), (v, vs)):
            t = split_heads(g, t, cfg.n_text_head, hd)
            out.append(g.op("Unsqueeze", [t, g.const([0])]))
    shape = [cfg.n_text_layer, "batch", cfg.n_text_head, cfg.n_audio_ctx, hd]
    g.output(g.op("Concat", ks, axis=0) if len(ks) > 1 else ks[0], "cross_k", FLOAT, shape)
    g.output(g.op("Concat", vs, axis=0) if len(vs) > 1 else vs[0], "cross_v", FLOAT, shape)
    return g.model()
