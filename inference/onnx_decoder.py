"""Build the whisper decoder graphs: one cached step (decoder.onnx) and the alignment pass (aligner.onnx).

Self-attention K/V of past tokens come in stacked over layers and go out with the new tokens appended;
cross-attention K/V come precomputed from the encoder. Attention uses contrib MultiHeadAttention (fast
on CPU and CUDA); the aligner spells cross-attention out because it needs the softmax weights.
"""

from __future__ import annotations

import numpy as np
import onnx

from inference.config import ModelConfig
from inference.ct2_reader import CT2Model
from inference.onnx_builder import FLOAT, INT64, MS_DOMAIN, GraphBuilder
from inference.onnx_encoder import feed_forward, merge_heads, residual_block, split_heads

NEG_INF = -1e9


def _layer(g: GraphBuilder, stacked: str, i: int) -> str:
    """[L, ...] -> the i-th layer's slice."""
    return g.op("Gather", [stacked, g.const(i)], axis=0)


def _stack(g: GraphBuilder, values: list[str]) -> str:
    values = [g.op("Unsqueeze", [v, g.const([0])]) for v in values]
    return g.op("Concat", values, axis=0) if len(values) > 1 else g.op("Identity", values)


class _Positions:
    """Shapes derived once per graph: past length P, new length S, the causal mask [S, P+S]."""

    def __init__(self, g: GraphBuilder, tokens: str, past: str | None) -> None:
        s = g.op("Shape", [tokens], start=1, end=2)
        p = g.const([0]) if past is None else g.op("Shape", [past], start=2, end=3)
        total = g.op("Add", [p, s])
        zero, one = g.const(0), g.const(1)
        p0, total0 = g.op("Squeeze", [p]), g.op("Squeeze", [total])
        self.positions = g.op("Range", [p0, total0, one])  # [S]
        cols = g.op("Range", [zero, total0, one])  # [P+S]
        future = g.op(
            "Greater",
            [g.op("Unsqueeze", [cols, g.const([0])]), g.op("Unsqueeze", [self.positions, g.const([1])])],
        )
        self.mask = g.op(
            "Where", [future, g.const(NEG_INF, np.float32), g.const(0.0, np.float32)]
        )  # [S, P+S]
        self.mask4 = g.op("Unsqueeze", [self.mask, g.const([0, 1])])  # [1, 1, S, P+S]


def _plain_attention(g: GraphBuilder, q: str, k: str, v: str, mask: str | None, head_dim: int):
    """q [B,H,S,D], k/v [B,H,T,D] -> (out [B,H,S,D], weights [B,H,S,T])."""
    q = g.op("Mul", [q, g.const(head_dim**-0.5, np.float32)])
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    if mask is not None:
        scores = g.op("Add", [scores, mask])
    weights = g.op("Softmax", [scores], axis=-1)
    return g.op("MatMul", [weights, v]), weights


def _self_attention(g, m, x, prefix, cfg, pos, past_k, past_v, use_mha):
    """Causal self-attention; returns (output, present_k [B,H,P+S,D], present_v)."""
    d, n_head, hd = cfg.n_text_state, cfg.n_text_head, cfg.head_dim
    weight, bias = m.get(prefix + "/linear_0/weight"), m.get(prefix + "/linear_0/bias")
    out_w, out_b = m.get(prefix + "/linear_1/weight"), m.get(prefix + "/linear_1/bias")
    if use_mha:
        qkv = g.linear(x, weight, None, prefix + "/qkv")
        q, k, v = g.op("Split", [qkv, g.const([d, d, d])], n_out=3, axis=-1)
        inputs = [q, k, v, g.weight(prefix + "/qkv.bias", bias), "", pos.mask4]
        if past_k is not None:
            inputs += [past_k, past_v]
        attn, present_k, present_v = g.op(
            "MultiHeadAttention", inputs, n_out=3, domain=MS_DOMAIN, num_heads=n_head
        )
        return g.linear(attn, out_w, out_b, prefix + "/out"), present_k, present_v
    qkv = g.linear(x, weight, bias, prefix + "/qkv")
    q, k, v = (
        split_heads(g, t, n_head, hd) for t in g.op("Split", [qkv, g.const([d, d, d])], n_out=3, axis=-1)
    )
    if past_k is not None:
        k = g.op("Concat", [past_k, k], axis=2)
        v = g.op("Concat", [past_v, v], axis=2)
    attn, _ = _plain_attention(g, q, k, v, pos.mask, hd)
    return g.linear(merge_heads(g, attn), out_w, out_b, prefix + "/out"), k, v


def _cross_attention(g, m, x, prefix, cfg, cross_k, cross_v, use_mha, weights_out=None):
    """Attention over the encoder output; cross_k/v [Bc,H,1500,D] already projected.

    Bc may divide B: hypotheses sharing one audio (beams, stored contiguously) are folded into the
    query length, so the K/V of a window are read once per step instead of once per beam.
    """
    n_head, hd, d = cfg.n_text_head, cfg.head_dim, cfg.n_text_state
    q = g.linear(x, m.get(prefix + "/linear_0/weight"), m.get(prefix + "/linear_0/bias"), prefix + "/q")
    if use_mha and weights_out is None:
        q_shape = g.op("Shape", [q])
        folded = g.op("Concat", [g.op("Shape", [cross_k], start=0, end=1), g.const([-1, d])], axis=0)
        q = g.op("Reshape", [q, folded])
        attn = g.op("MultiHeadAttention", [q, cross_k, cross_v], domain=MS_DOMAIN, num_heads=n_head)
        attn = g.op("Reshape", [attn, q_shape])
    else:
        attn, weights = _plain_attention(g, split_heads(g, q, n_head, hd), cross_k, cross_v, None, hd)
        attn = merge_heads(g, attn)
        if weights_out is not None:
            weights_out.append(weights)
    return g.linear(
        attn, m.get(prefix + "/linear_2/weight"), m.get(prefix + "/linear_2/bias"), prefix + "/out"
    )


def _decoder_body(g, m, cfg, tokens, past, cross, use_mha, cross_weights=None, lookup_only=False):
    """Embeddings, the layers, the final norm; returns (hidden, embeddings, presents_k, presents_v).

    `lookup_only`: the embedding table is not reused as the output projection.
    `past` is each layer's (self_k, self_v) or None (no cache); `cross(i)` gives layer i's (cross_k, cross_v).
    """
    pos = _Positions(g, tokens, past[0][0] if past else None)
    table = m.variables["decoder/embeddings/weight"]
    if lookup_only and table.dtype == np.float16:
        # only looked up, never multiplied: the source's float16 table loses nothing and halves its size
        embeddings = g.weight("decoder/embeddings", table)
        x = g.op("Cast", [g.op("Gather", [embeddings, tokens])], to=FLOAT)
    else:
        embeddings = g.weight("decoder/embeddings", m.get("decoder/embeddings/weight"))
        x = g.op("Gather", [embeddings, tokens])
    positions = g.weight("decoder/positions", m.get("decoder/position_encodings/encodings"))
    x = g.op("Add", [x, g.op("Gather", [positions, pos.positions])])
    presents_k, presents_v = [], []
    for i in range(cfg.n_text_layer):
        p = f"decoder/layer_{i}"
        past_k, past_v = past[i] if past else (None, None)
        ck, cv = cross(i)

        def self_attn(h, p=p, past_k=past_k, past_v=past_v):
            out, k, v = _self_attention(g, m, h, p + "/self_attention", cfg, pos, past_k, past_v, use_mha)
            presents_k.append(k)
            presents_v.append(v)
            return out

        def cross_attn(h, p=p, ck=ck, cv=cv):
            return _cross_attention(g, m, h, p + "/attention", cfg, ck, cv, use_mha, cross_weights)

        x = residual_block(g, m, x, p + "/self_attention", self_attn)
        x = residual_block(g, m, x, p + "/attention", cross_attn)
        x = residual_block(g, m, x, p + "/ffn", lambda h, p=p: feed_forward(g, m, h, p + "/ffn"))
    x = g.layer_norm(x, m.get("decoder/layer_norm/gamma"), m.get("decoder/layer_norm/beta"), "decoder/ln")
    return x, embeddings, presents_k, presents_v


def cross_input_names(n_text_layer: int) -> list[tuple[str, str]]:
    """decoder.onnx takes each layer's cross K/V as its own input, so no per-step copy slices them."""
    return [(f"cross_k_{i}", f"cross_v_{i}") for i in range(n_text_layer)]


def cache_names(n_text_layer: int, prefix: str) -> list[tuple[str, str]]:
    """Per-layer self-attention cache names: prefix "self" for inputs, "present" for outputs."""
    return [(f"{prefix}_k_{i}", f"{prefix}_v_{i}") for i in range(n_text_layer)]


def build_decoder(
    m: CT2Model, cfg: ModelConfig, use_mha: bool = True, untied_projection: bool = False
) -> onnx.ModelProto:
    """One decoding step. `untied_projection` stores the output projection as its own MatMul weight
    (what int8 quantization needs); otherwise it shares the embedding table through Gemm(transB).

    Caches and cross K/V are one input/output per layer: stacking them would copy them every step.
    """
    g = GraphBuilder("whisper_decoder")
    tokens = g.input("tokens", INT64, ["batch", "new"])
    cache_shape = ["batch", cfg.n_text_head, "past", cfg.head_dim]
    past = [
        (g.input(k, FLOAT, cache_shape), g.input(v, FLOAT, cache_shape))
        for k, v in cache_names(cfg.n_text_layer, "self")
    ]
    cross_shape = ["cross_batch", cfg.n_text_head, cfg.n_audio_ctx, cfg.head_dim]
    cross = [
        (g.input(k, FLOAT, cross_shape), g.input(v, FLOAT, cross_shape))
        for k, v in cross_input_names(cfg.n_text_layer)
    ]
    x, embeddings, presents_k, presents_v = _decoder_body(
        g, m, cfg, tokens, past, lambda i: cross[i], use_mha, lookup_only=untied_projection
    )
    last = g.op("Gather", [x, g.const(-1)], axis=1)  # [B, d]
    if untied_projection:
        projection = m.get("decoder/embeddings/weight").T.copy()
        logits = g.op("MatMul", [last, g.weight("decoder/projection", projection)])
    else:
        logits = g.op("Gemm", [last, embeddings], transB=1)  # projection is tied to the embedding table
    g.output(logits, "logits", FLOAT, ["batch", cfg.n_vocab])
    out_shape = ["batch", cfg.n_text_head, "total", cfg.head_dim]
    for (k_name, v_name), k, v in zip(
        cache_names(cfg.n_text_layer, "present"), presents_k, presents_v, strict=True
    ):
        g.output(k, k_name, FLOAT, out_shape)
        g.output(v, v_name, FLOAT, out_shape)
    return g.model()


def build_aligner(m: CT2Model, cfg: ModelConfig) -> onnx.ModelProto:
    """The decoder over a whole sequence (B = 1), returning the alignment heads' cross-attention weights."""
    g = GraphBuilder("whisper_aligner")
    tokens = g.input("tokens", INT64, [1, "seq"])
    shape = [cfg.n_text_layer, 1, cfg.n_text_head, cfg.n_audio_ctx, cfg.head_dim]
    cross_k, cross_v = g.input("cross_k", FLOAT, shape), g.input("cross_v", FLOAT, shape)
    weights: list[str] = []

    def cross(i: int) -> tuple[str, str]:
        return _layer(g, cross_k, i), _layer(g, cross_v, i)

    _decoder_body(g, m, cfg, tokens, None, cross, True, weights, lookup_only=True)
    heads = []
    for layer, head in cfg.alignment_heads:
        w = g.op("Gather", [weights[layer], g.const(0)], axis=0)  # [H, S, T]
        heads.append(g.op("Gather", [w, g.const(head)], axis=0))  # [S, T]
    g.output(_stack(g, heads), "alignment", FLOAT, [len(heads), "seq", cfg.n_audio_ctx])
    return g.model()
