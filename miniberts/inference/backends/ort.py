"""ONNX Runtime backend. fp32: the graph of inference/export.py fused by `onnxruntime.transformers.optimizer` (SkipLayerNorm,
BiasGelu; the SDPA pattern our export writes is not one its Attention fusion matches). int8: smoothquant.py's
accurate int8 (SmoothQuant scale migration calibrated on real text, int8 weights per channel with activations
quantized per call, the FFN output in fp32) of the unfused graph: the quantizer's shape inference cannot type the
fused graph's com.microsoft ops, and the session fuses what it can when it loads. The int8 artifact is cached per
weights and per calibration token ids.

Agreement with our fp32 encoder on the real MiniLM (tests/test_backends.py, tests/test_int8.py): fp32 within 1e-4 max
abs on the hidden states at real tokens (measured ~2e-6: fused kernels sum in another order); int8 mean-pooled cosine
>= 0.99 on every sentence.
"""

from __future__ import annotations

import logging
from pathlib import Path


from ...errors import MinibertsError
from ...model import BertModel
from ...tokenizer import WordPieceTokenizer
from ..export import export_onnx, session
from .base import EngineEncoder
from .cache import artifact
from .smoothquant import calibration_ids, calibration_key, quantize_smooth

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


def build(encoder: BertModel, precision: str, calibration: list[list[int]] | None = None):
    """The writer of the artifact folder; int8 needs `calibration` (token ids, smoothquant.calibration_ids)."""
    def write(folder: Path) -> None:
        raw = export_onnx(encoder, folder / "raw.onnx")
        if precision == "int8":
            quantize_smooth(raw, folder / "model.onnx", encoder, calibration)
        else:
            log.info("onnxruntime fusions: %s", fuse(raw, folder / "model.onnx", encoder.cfg.num_heads, encoder.cfg.hidden_size))
        raw.unlink()

    return write


class OrtEncoder(EngineEncoder):
    name = "onnxruntime"

    def __init__(self, encoder: BertModel, precision: str, threads: int, tokenizer: WordPieceTokenizer | None = None,
                 calibration: list[str] | None = None):
        """int8 calibrates on `calibration` (texts; default: the built-in text) tokenized by `tokenizer`."""
        # ONNX Runtime's CPU provider has no bf16 kernels for these ops: bf16 requests run the fp32 graph.
        super().__init__(encoder.cfg, "int8" if precision == "int8" else "fp32")
        ids, variant = None, self.precision
        if self.precision == "int8":
            if tokenizer is None:
                raise MinibertsError("onnxruntime int8 is calibrated on text: it needs the model's tokenizer")
            ids = calibration_ids(tokenizer, calibration)
            variant = f"int8-smoothquant-{calibration_key(ids)}"
        folder = artifact(encoder, self.name, variant, build(encoder.float().eval(), self.precision, ids))
        self.session = session(folder / "model.onnx", threads)

    def run(self, input_ids, attention_mask, token_type_ids):
        hidden, pooled = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask,
                                                 "token_type_ids": token_type_ids})
        return hidden, pooled



