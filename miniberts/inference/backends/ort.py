"""ONNX Runtime backend. fp32: the graph of inference/export.py fused by `onnxruntime.transformers.optimizer` (SkipLayerNorm,
BiasGelu; the SDPA pattern our export writes is not one its Attention fusion matches). int8: `quantize_dynamic`
(per-channel int8 MatMul weights, activations quantized per call) of the unfused graph, as `miniberts export
--quantize int8` writes it: the quantizer's shape inference cannot type the fused graph's com.microsoft ops, and the
session fuses what it can when it loads.

Agreement with our fp32 encoder on the real MiniLM (tests/test_backends.py): fp32 within 1e-4 max abs on the hidden
states at real tokens (measured ~2e-6: fused kernels sum in another order); int8 mean-pooled cosine >= 0.99.
"""

from __future__ import annotations

import logging
from pathlib import Path


from ..export import export_onnx, quantize_onnx, session
from ...model import BertModel
from .base import EngineEncoder
from .cache import artifact

log = logging.getLogger(__name__)


def fuse(raw: Path, out: Path, num_heads: int, hidden: int) -> dict[str, int]:
    """The fused graph of `raw` at `out`; returns the count of each fusion that matched."""
    from onnxruntime.transformers import optimizer

    logging.disable(logging.INFO)  # the optimizer logs every pattern it tried and every file it saved
    try:
        fused = optimizer.optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden)
        fused.save_model_to_file(str(out))
        return {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    finally:
        logging.disable(logging.NOTSET)


def build(encoder: BertModel, precision: str):
    def write(folder: Path) -> None:
        raw = export_onnx(encoder, folder / "raw.onnx")
        if precision == "int8":
            quantize_onnx(raw, folder / "model.onnx")
        else:
            log.info("onnxruntime fusions: %s", fuse(raw, folder / "model.onnx", encoder.cfg.num_heads, encoder.cfg.hidden_size))
        raw.unlink()

    return write


class OrtEncoder(EngineEncoder):
    name = "onnxruntime"

    def __init__(self, encoder: BertModel, precision: str, threads: int):
        # ONNX Runtime's CPU provider has no bf16 kernels for these ops: bf16 requests run the fp32 graph.
        super().__init__(encoder.cfg, "int8" if precision == "int8" else "fp32")
        folder = artifact(encoder, self.name, self.precision, build(encoder.float().eval(), self.precision))
        self.session = session(folder / "model.onnx", threads)

    def run(self, input_ids, attention_mask, token_type_ids):
        hidden, pooled = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask,
                                                 "token_type_ids": token_type_ids})
        return hidden, pooled



