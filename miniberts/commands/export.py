"""`miniberts export MODEL (--onnx OUT.onnx | --engine NAME --out DIR | --format sentence-transformers --out DIR)
[--quantize int8] [--opset N]`: an ONNX graph for ONNX Runtime, the artifact an inference engine runs (ONNX Runtime
fused, OpenVINO IR, CTranslate2), or a sentence-transformers directory (what text-embeddings-inference serves)."""

import logging

from ..errors import MinibertsError
from ..inference.backends import export_engine
from ..inference.export import DEFAULT_OPSET, export
from ..inference.st_export import export_sentence_transformers

HELP = ("Export an encoder or classifier to ONNX (dynamic batch and sequence axes), an engine's artifact (optionally "
        "int8), or a sentence-transformers directory")


def add_arguments(parser):
    parser.add_argument("model", help="a model directory (Hugging Face or Google TF layout) or a Hub id "
                                      "(org/name[@revision], released:tiny); "
                                      "a classifier if it has a head")
    parser.add_argument("--onnx", metavar="OUT", help="output .onnx file")
    parser.add_argument("--engine", choices=["onnxruntime", "openvino", "ctranslate2"],
                        help="write this engine's artifact of the encoder to --out DIR instead (what --backend runs)")
    parser.add_argument("--format", choices=["sentence-transformers"],
                        help="write a sentence-transformers directory to --out DIR instead (SentenceTransformer(DIR) "
                             "and text-embeddings-inference load it; it embeds as `miniberts embed` does)")
    parser.add_argument("--out", metavar="DIR", help="output folder for --engine or --format (new or empty)")
    parser.add_argument("--force", action="store_true", help="--engine: write into a folder that holds files "
                        "already (an earlier export's are replaced; a file miniberts did not write never is)")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="int8: --onnx: dynamic quantization; --engine onnxruntime: the calibrated int8 "
                        "that --backend onnxruntime --int8 runs")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")


def run(args):
    if sum(map(bool, (args.onnx, args.engine, args.format))) != 1:
        raise MinibertsError("give one of --onnx OUT.onnx, --engine NAME --out DIR or --format sentence-transformers "
                             "--out DIR")
    if args.format:
        if not args.out:
            raise MinibertsError("--format needs --out DIR")
        out = export_sentence_transformers(args.model, args.out)
        logging.info("wrote %s (sentence-transformers: SentenceTransformer(%r) loads it)", out, str(out))
        return
    if args.engine:
        if not args.out:
            raise MinibertsError("--engine needs --out DIR")
        out = export_engine(args.model, args.engine, args.out, args.quantize, args.force)
        logging.info("wrote %s (%s, %s; the encoder with its pooler)", out, args.engine, args.quantize or "fp32")
        return
    out = export(args.model, args.onnx, args.quantize, args.opset)
    logging.info("wrote %s (%s, opset %d; inputs input_ids, attention_mask, token_type_ids [batch, sequence] int64)",
                 out, args.quantize or "fp32", args.opset)
