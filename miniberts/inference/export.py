"""ONNX export of an encoder or a classifier, with dynamic batch and sequence axes, optionally int8-quantized.

The graph is traced on the plain padded path (`unpad=False`): the unpadded path picks rows with boolean masks and
splits the batch into length groups in Python, both data-dependent, which a trace would freeze to the example batch.
ONNX Runtime gets the padded [B, S] layout with the attention mask, as `transformers` computes it.

Exporter: the TorchScript-based one (`torch.onnx.export(..., dynamo=False)`). The torch.export-based exporter, the
default since torch 2.9, needs the `onnxscript` package, which the `onnx` extra does not pull in; the TorchScript one
needs only `onnx`, handles this model (checked by tests/test_export.py on other batch and sequence sizes than the
example it traced) and still ships in torch 2.13 with a deprecation warning, which is silenced here.
int8: `onnxruntime.quantization.quantize_dynamic` (int8 weights of MatMul/Gemm with a scale per output channel,
activations quantized at run time). Per-channel scales keep MiniLM-L6's mean-pooled embeddings at cosine >= 0.98 to
fp32; one scale per tensor (the default of quantize_dynamic) drops them to 0.94.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_state, load_tokenizer, read_checkpoint
from ..errors import MinibertsError
from ..fileio import atomic_path
from ..model import BertForSequenceClassification, BertModel
from ..tokenizer import WordPieceTokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'miniberts[onnx]'"
DEFAULT_OPSET = 17  # the first opset with a LayerNormalization op; onnxruntime >= 1.14 runs it
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
PACKED_INPUTS = ["input_ids", "token_type_ids", "position_ids", "segment_ids"]  # export_packed_onnx's graph


def require_onnx():
    """(onnx, onnxruntime), or a one-line error naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MinibertsError(f"ONNX export and inference need onnx and onnxruntime ({e.name} is missing): {INSTALL_HINT}") from None
    return onnx, onnxruntime


def load_exportable(model_dir: str | Path) -> tuple[nn.Module, WordPieceTokenizer]:
    """The classifier when the checkpoint has a classification head, else the encoder (with pooler)."""
    ckpt = read_checkpoint(model_dir)
    if ckpt.has_head("classifier."):
        model: nn.Module = BertForSequenceClassification(ckpt.config)
        state = {k: v for k, v in ckpt.state.items() if not k.startswith(("mlm.", "nsp."))}
    else:
        model = BertModel(ckpt.config)
        state = ckpt.state
    load_state(model, state, ckpt.source, allow_new=("bert.pooler.",))
    return model.eval(), load_tokenizer(ckpt)


def output_names(model: nn.Module) -> list[str]:
    return ["logits"] if isinstance(model, BertForSequenceClassification) else ["last_hidden_state", "pooler_output"]


def export_onnx(model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace `model` (BertModel or BertForSequenceClassification, fp32) into an ONNX file at `out`."""
    require_onnx()
    encoder = model.bert if isinstance(model, BertForSequenceClassification) else model
    if not isinstance(encoder, BertModel):
        raise MinibertsError(f"can export a BertModel or BertForSequenceClassification, not {type(model).__name__}")
    # The example must contain padding: `make_packing` checks `attention_mask.all()` in Python, and a trace of a
    # batch without padding would record the mask-free branch and ignore the mask forever after.
    example = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    mask = (example != 0).long()
    names = output_names(model)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS + ["last_hidden_state"]}
    axes.update({"pooler_output": {0: "batch"}, "logits": {0: "batch"}})
    was_unpadded = encoder.unpad
    encoder.unpad = False
    try:
        return _trace(model, (example, mask, torch.zeros_like(example)), INPUTS, names,
                      {k: v for k, v in axes.items() if k in INPUTS + names}, out, opset)
    finally:
        encoder.unpad = was_unpadded


class PackedGraph(nn.Module):
    """`BertModel.packed_hidden` as a module to trace: rows of several sentences each -> last hidden states."""

    def __init__(self, encoder: BertModel):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, token_type_ids, position_ids, segment_ids):
        return self.encoder.packed_hidden(input_ids, token_type_ids, position_ids, segment_ids)


def export_packed_onnx(encoder: BertModel, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace the encoder's packed form (several sentences per row, inference/packing.py) into an ONNX file at `out`:
    inputs PACKED_INPUTS [rows, width], output last_hidden_state [rows, width, hidden]."""
    require_onnx()
    example = torch.tensor([[2, 7, 3, 2, 8, 9, 3], [2, 9, 3, 0, 0, 0, 0]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 1, 2, 0, 0, 0, 0]])
    segments = torch.tensor([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 0, 0, 0, 0]])
    axes = {name: {0: "rows", 1: "width"} for name in PACKED_INPUTS + ["last_hidden_state"]}
    return _trace(PackedGraph(encoder), (example, torch.zeros_like(example), positions, segments), PACKED_INPUTS,
                  ["last_hidden_state"], axes, out, opset)


def _trace(model: nn.Module, example: tuple, inputs: list[str], outputs: list[str], axes: dict, out: str | Path,
           opset: int) -> Path:
    out = Path(out)
    with warnings.catch_warnings(), torch.no_grad(), atomic_path(out) as tmp:
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter; see the module docstring
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks frozen by the trace: harmless
        torch.onnx.export(model.float().eval(), example, str(tmp), dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=opset)
    return out


def quantize_onnx(src: str | Path, out: str | Path, exclude: list[str] | tuple[str, ...] = ()) -> Path:
    """int8 dynamic quantization of an exported fp32 graph; the nodes named in `exclude` stay fp32."""
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    logging.disable(logging.WARNING)  # the quantizer logs a line per tensor it leaves in float (attention, LayerNorm)
    try:
        with atomic_path(out) as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=list(exclude))
    finally:
        logging.disable(logging.NOTSET)
    return out


def export(model_dir: str | Path, out: str | Path, quantize: str | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """A model directory -> an ONNX file (fp32, or int8 when quantize='int8')."""
    if quantize not in (None, "int8"):
        raise MinibertsError(f"--quantize must be int8, got {quantize!r}")
    require_onnx()
    model, _ = load_exportable(model_dir)
    out = Path(out)
    if quantize is None:
        return export_onnx(model, out, opset)
    fp32 = out.with_name(out.stem + ".fp32.tmp.onnx")
    try:
        export_onnx(model, fp32, opset)
        return quantize_onnx(fp32, out)
    finally:
        fp32.unlink(missing_ok=True)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU InferenceSession (intra-op threads: all cores unless `threads`). Running a graph needs
    onnxruntime only: `onnx` (seconds to import) is for building one."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MinibertsError(f"ONNX inference needs onnxruntime, which is not installed: {INSTALL_HINT}") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
