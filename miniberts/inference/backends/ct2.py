"""CTranslate2 backend: `ctranslate2.converters.TransformersConverter` reads the encoder saved in the Hugging Face
layout (checkpoint.save_hf, architecture BertModel) and writes its model.bin in float32; `ctranslate2.Encoder` runs
it with compute_type float32 or int8 (weights quantized when loaded; int8 GEMMs with VNNI where the CPU has it).

Inputs: CTranslate2 takes each sequence's ids and its length, so the batch must be right-padded (real tokens first,
as the tokenizer pads); it skips the padding itself. Agreement on the real MiniLM: float32 within 1e-4 max abs
(measured ~2e-6), int8 mean-pooled cosine >= 0.99.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ...errors import MinibertsError
from ...model import BertModel
from ...tokenizer import BUILTIN_VOCAB, WordPieceTokenizer
from .base import EngineEncoder
from .cache import artifact


def build(encoder: BertModel):
    def write(folder: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        from ...checkpoint import save_hf

        with tempfile.TemporaryDirectory(prefix="miniberts-ct2-") as hf:
            # The converter reads only the weights and config; the built-in vocabulary stands in for the tokenizer
            # files it copies (CTranslate2 is given token ids, never text).
            save_hf(encoder, WordPieceTokenizer(BUILTIN_VOCAB), Path(hf))
            logging.disable(logging.WARNING)
            try:
                TransformersConverter(hf).convert(str(folder), quantization="float32", force=True)
            finally:
                logging.disable(logging.NOTSET)

    return write


class Ct2Encoder(EngineEncoder):
    name = "ctranslate2"

    def __init__(self, encoder: BertModel, precision: str, threads: int):
        import ctranslate2

        # No bf16 compute type on CPU in CTranslate2 4.x: bf16 requests run float32.
        super().__init__(encoder.cfg, "int8" if precision == "int8" else "fp32")
        folder = artifact(encoder, self.name, "float32", build(encoder.float().eval()))
        self.ct2 = ctranslate2
        self.encoder = ctranslate2.Encoder(str(folder), device="cpu", compute_type="int8" if self.precision == "int8" else "float32",
                                           intra_threads=threads)

    def run(self, input_ids, attention_mask, token_type_ids):
        lengths = attention_mask.sum(1)
        if not (attention_mask == (np.arange(attention_mask.shape[1]) < lengths[:, None])).all():
            raise MinibertsError("--backend ctranslate2 needs right-padded batches (real tokens first in every row)")
        width = max(int(lengths.max()), 1)
        ids = self.ct2.StorageView.from_array(np.ascontiguousarray(input_ids[:, :width], dtype=np.int32))
        out = self.encoder.forward_batch(ids, self.ct2.StorageView.from_array(lengths.astype(np.int32)),
                                         token_type_ids=token_type_ids[:, :width].tolist())
        hidden = np.asarray(out.last_hidden_state)
        if width < input_ids.shape[1]:  # keep the [B, S, H] contract of the other backends
            hidden = np.pad(hidden, ((0, 0), (0, input_ids.shape[1] - width), (0, 0)))
        return hidden, np.asarray(out.pooler_output)
