"""`miniberts export MODEL --onnx OUT.onnx [--quantize int8] [--opset N]`: an ONNX graph for ONNX Runtime."""

import logging

from ..export import DEFAULT_OPSET, export

HELP = "Export an encoder or classifier to ONNX (dynamic batch and sequence axes), optionally int8-quantized"


def add_arguments(parser):
    parser.add_argument("model", help="a model directory (Hugging Face or Google TF layout); a classifier if it has a head")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="output .onnx file")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="int8 dynamic quantization (onnxruntime)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")


def run(args):
    out = export(args.model, args.onnx, args.quantize, args.opset)
    logging.info("wrote %s (%s, opset %d; inputs input_ids, attention_mask, token_type_ids [batch, sequence] int64)",
                 out, args.quantize or "fp32", args.opset)
