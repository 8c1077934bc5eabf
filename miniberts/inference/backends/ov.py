"""OpenVINO backend: the fp32 ONNX graph of inference/export.py converted to OpenVINO IR (model.xml/.bin), compiled for the
CPU with INFERENCE_PRECISION_HINT f32 (fp32) or bf16 (bf16: OpenVINO's bf16 kernels where the CPU reports BF16 in
OPTIMIZATION_CAPABILITIES, else it runs f32). int8: ov_int8.py's static int8 by NNCF, calibrated on real text and
cached per weights, per quantization settings and per calibration token ids, compiled with the f32 hint (what is not
int8 runs in fp32).

Honest tolerance: OpenVINO's CPU plugin is not bit-close to PyTorch even in f32: on the real MiniLM its hidden
states differ by ~2.2e-3 max abs (|h| up to ~6, so ~4e-4 relative; the same with EXECUTION_MODE_HINT ACCURACY and
dynamic quantization off), the pooled output by ~1e-4. The parity tests hold it to 5e-3 and mean-pooled cosine
>= 0.9999.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import MinibertsError
from ..export import export_onnx, export_packed_onnx
from ...model import BertModel
from ...tokenizer import WordPieceTokenizer
from . import ov_int8
from .base import EngineEncoder
from .cache import artifact
from .smoothquant import calibration_ids, calibration_key


# Input shapes whose prepared kernels OpenVINO keeps for the packed graph (its CPU_RUNTIME_CACHE_CAPACITY, 5,000 by
# default), ~1 MiB each on Tiny: enough for every shape a server's packed passes come in (serve/forwards.py rounds
# them to a few widths and row counts), so the memory levels off. Packed forwards in any row count and 16-token widths
# met hundreds of shapes: a server's resident memory rose by ~400 MiB over three rounds of mixed loads.
PACKED_SHAPES_KEPT = 256


def build(encoder: BertModel, export=export_onnx):
    """The writer of the IR folder: `export` (export_onnx, or export_packed_onnx for the packed graph) to ONNX, then
    OpenVINO's conversion."""
    def write(folder: Path) -> None:
        import openvino as ov

        export(encoder, folder / "raw.onnx")
        ov.save_model(ov.convert_model(str(folder / "raw.onnx")), str(folder / "model.xml"))
        (folder / "raw.onnx").unlink()

    return write


class OpenVinoEncoder(EngineEncoder):
    name = "openvino"

    def __init__(self, encoder: BertModel, precision: str, threads: int, tokenizer: WordPieceTokenizer | None = None,
                 calibration: list[str] | None = None):
        """int8 calibrates on `calibration` (texts; default: the built-in text) tokenized by `tokenizer`."""
        import openvino as ov

        super().__init__(encoder.cfg, precision)
        if precision == "int8":
            ov_int8.require_nncf()
            if tokenizer is None:
                raise MinibertsError("openvino int8 is calibrated on text: it needs the model's tokenizer")
            ids = calibration_ids(tokenizer, calibration)
            folder = artifact(encoder, self.name, f"int8-nncf-{ov_int8.settings()}-{calibration_key(ids)}",
                              ov_int8.build(encoder.float().eval(), ids))
        else:
            folder = artifact(encoder, self.name, "ir", build(encoder.float().eval()))
        self._core = ov.Core()
        self._config = {"INFERENCE_NUM_THREADS": threads}
        if precision != "default":  # "default" (the bench's row): what OpenVINO picks for this CPU by itself
            self._config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
        self.compiled = self._compile(folder)
        if precision != "int8":
            # "<Type: 'bfloat16'>" (or 'float16', 'float32'). No BF16 in the CPU's OPTIMIZATION_CAPABILITIES:
            # OpenVINO runs f32 whatever the hint.
            ran = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
            self.precision = "bf16" if "bfloat16" in ran or "bf16" in ran else "f16" if "float16" in ran else "fp32"
        self.request = self.compiled.create_infer_request()
        self.outputs = self.compiled.outputs
        # The packed graph (inference/packing.py), exported and compiled on its first use: a server's passes use it,
        # a one-off `embed` never does. Not for int8: its calibrated graph is the padded one.
        self._packed_folder = None if precision == "int8" else (
            lambda: artifact(encoder, self.name, "ir-packed", build(encoder.float().eval(), export_packed_onnx)))
        self._packed_request = None

    def _compile(self, folder: Path, **extra):
        # CACHE_DIR: OpenVINO keeps the compiled model there (keyed by graph, precision and threads) and a later
        # process imports it instead of compiling the IR again, a fraction of the time
        config = {**self._config, "CACHE_DIR": str(folder / "compiled"), **extra}
        return self._core.compile_model(str(folder / "model.xml"), "CPU", config)

    def packs(self) -> bool:
        return self._packed_folder is not None

    def run_packed(self, input_ids, token_type_ids, position_ids, segment_ids):
        if not self.packs():
            return super().run_packed(input_ids, token_type_ids, position_ids, segment_ids)
        if self._packed_request is None:
            self._packed_request = self._compile(self._packed_folder(), CPU_RUNTIME_CACHE_CAPACITY=PACKED_SHAPES_KEPT
                                                 ).create_infer_request()
        out = self._packed_request.infer({"input_ids": input_ids, "token_type_ids": token_type_ids,
                                          "position_ids": position_ids, "segment_ids": segment_ids},
                                         share_inputs=True, share_outputs=True)
        return out[0]

    def run(self, input_ids, attention_mask, token_type_ids):
        hidden, pooled = self.run_views(input_ids, attention_mask, token_type_ids)
        return hidden.copy(), pooled.copy()

    def run_views(self, input_ids, attention_mask, token_type_ids):
        # share_inputs: OpenVINO reads our arrays in place; share_outputs: its own output buffers, no copy (one
        # sentence on MiniLM: 0.13 ms less than infer's default copies both ways). One mode for every call: a
        # request that once ran on shared inputs cannot take copied ones of another shape.
        out = self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask,
                                  "token_type_ids": token_type_ids}, share_inputs=True, share_outputs=True)
        return out[self.outputs[0]], out[self.outputs[1]]
