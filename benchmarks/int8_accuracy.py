"""Which int8 method keeps the real MiniLM accurate: cosine to fp32 on every sentence, and a linear probe's accuracy.

    python benchmarks/int8_accuracy.py [--sentences 1200] [--methods 'NAME;NAME'] [--out FILE.md]

Every method quantizes the same ONNX export of all-MiniLM-L6-v2 (miniberts.inference.export.export_onnx), with ONNX
Runtime (run in an ONNX Runtime session) or with NNCF (the `nncf` rows: converted to OpenVINO IR, run by OpenVINO with
the f32 hint, as `--backend openvino --int8` runs it); the reference is the unquantized graph in ONNX Runtime (within
5e-6 of our torch fp32). Metrics, on mean-pooled embeddings (the model's own pooling) of padded, length-sorted
batches of 32:

- cosine to fp32 over `--sentences` Rotten Tomatoes texts (reviews and plot summaries, shuffled with seed 1) and
  the short texts (SHORT, a fixed list of one- to four-word texts, and every distinct text of the corpus of two words
  or fewer; the shortest texts are where static int8 loses most): min over all, min over the short texts, 1st
  percentile, mean;
- accuracy of the bench's linear probe (bench.engines.rt_task: a logistic-regression head fitted on fp32 features of
  800 fresh/rotten reviews, applied to each method's features of 400 held-out ones), and its delta to fp32.

Calibration: the library's default (inference/backends/smoothquant.py: 256 BBC News sentences, the built-in pre-training text,
not the evaluation's Rotten Tomatoes), one sentence per calibration batch.

Methods: `dynamic` (quantize_dynamic, int8 weights per output channel, activations per tensor at run time: what
`--int8` on ONNX Runtime ran before), the same with some layer Linears kept in fp32 (the roles: qkv = attention
projection, out = attention output, fc = FFN input, proj = FFN output), static QDQ (activations uint8 per tensor
calibrated by MinMax; weights int8 per channel; the weight MatMuls only), and SmoothQuant's scale migration before
dynamic int8 with per-role alphas; NNCF's static int8 (OpenVINO: activations uint8 per tensor with calibrated
ranges, weights int8 per channel, the attention's matmuls too) with its own SmoothQuant at one alpha for every
MatMul, optionally with `proj` (and `out`) in fp32 in every layer or `proj` in the layers whose calibrated input has
an outlier channel (what `--int8` on OpenVINO ran before), and with NNCF's default activation ranges (the mean over
calibration texts of each text's min and max) or the min and max over all of them (inference/backends/ov_int8.py).
ONNX Runtime's histogram calibrators (Percentile, Entropy) are not rows: in
onnxruntime 1.32 they fail on calibration inputs of different lengths ("inhomogeneous shape", calibrate.py
collect_absolute_value), and padding every text to one length would put the padding rows in the ranges.
Accuracy only: no timing here (see `miniberts bench`).
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import tempfile
from pathlib import Path

import numpy as np

from miniberts.bench.engines import rt_task
from miniberts.bench.harness import cpu_model, rt_rows
from miniberts.checkpoint import load_encoder
from miniberts.data.builtin import minilm_dir
from miniberts.fileio import atomic_write_text
from miniberts.inference.backends import ov_int8
from miniberts.inference.backends.ov_int8 import FP32 as OV_FP32
from miniberts.inference.backends.smoothquant import (SMOOTHED, calibration_ids, input_maxima, layer_matmuls,
                                                      quantize_smooth, smooth)
from miniberts.inference.batching import length_batches
from miniberts.inference.export import export_onnx, quantize_onnx, session

ROLES = ("qkv", "out", "fc", "proj")
MAX_LEN = 128
OUTLIER_RATIO = 3.0
SHORT = ["Eh.", "Ok!", "Ok.", "Yes.", "No.", "Wow.", "Meh.", "Great!", "Boring.", "Fine.", "Bad.", "Good", "Awful",
         "Loved it.", "Hmm.", "Yawn.", "Superb.", "Why?", "Huh?", "Bravo!", "Nope.", "Sure.", "Terrible", "Brilliant",
         "Dull.", "Fun!", "Oh well.", "So-so.", "Ugh.", "A must.", "Skip it.", "Not bad.", "Pass.", "Yes!", "Hi",
         "Thanks", "OK", "Cool", "Whatever.", "Amazing", "movie", "film", "the", "a", "love", "hate", "!", "?", ".",
         "Merci pour le movie.", "Wonderful!", "Masterpiece.", "Garbage.", "Ehh", "lol", "wtf", "Ha!", "Zzz.", ""]


class Reader:
    """ONNX Runtime's CalibrationDataReader over calibration token ids, one text per batch."""

    def __init__(self, ids: list[list[int]]):
        self.items = iter([{"input_ids": np.array([x], np.int64), "attention_mask": np.ones((1, len(x)), np.int64),
                            "token_type_ids": np.zeros((1, len(x)), np.int64)} for x in ids])

    def get_next(self):
        return next(self.items, None)


def dynamic(fp32: tuple[str, ...] = ()):
    return lambda raw, out, encoder, ids: quantize_onnx(raw, out, exclude=layer_matmuls(raw, fp32))


def static(method: str, fp32: tuple[str, ...] = ()):
    def make(raw: Path, out: Path, encoder, ids) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        quantize_static(str(raw), str(out), Reader(ids), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        nodes_to_quantize=layer_matmuls(raw, tuple(r for r in ROLES if r not in fp32)),
                        calibrate_method=getattr(CalibrationMethod, method))
    return make


def smoothed(alphas: dict[str, float], fp32: tuple[str, ...] = ()):
    def make(raw: Path, out: Path, encoder, ids) -> None:
        maxima = input_maxima(encoder, ids, tuple(alphas))
        mid = smooth(raw, out.with_name(out.stem + ".smoothed.onnx"), maxima, alphas)
        quantize_onnx(mid, out, exclude=layer_matmuls(mid, fp32))
    return make


def outlier_matmuls(encoder, ids: list[list[int]]) -> list[str]:
    """The FFN output MatMuls whose input, over the calibration texts, has an outlier channel: max over channels of
    max |x_j| > OUTLIER_RATIO x the 99th percentile of the per-channel maxima (MiniLM-L6: layers 0-3)."""
    maxima = input_maxima(encoder, ids, ("proj",))
    return [name for name, m in maxima.items() if m.max() > OUTLIER_RATIO * np.percentile(m, 99)]


def nncf_static(alpha: float, fp32: str = "", ranges: str = "mean_minmax"):
    """NNCF's int8 of the export, saved as OpenVINO IR (`out` with the suffix .xml); `fp32`: "" (every MatMul
    int8), roles kept in fp32 in every layer ("proj", "proj out"), with "outliers": the FFN outputs of
    outlier_matmuls; `ranges`: the activation ranges (ov_int8.quantize)."""
    def make(raw: Path, out: Path, encoder, ids) -> None:
        import openvino as ov

        roles = fp32.split()
        keep = (outlier_matmuls(encoder, ids) if "outliers" in roles else []) + layer_matmuls(raw, tuple(roles))
        ov.save_model(ov_int8.quantize(ov.convert_model(str(raw)), ids, keep, alpha, ranges),
                      str(out.with_suffix(".xml")))
    return make


def only(role: str) -> tuple[str, ...]:
    return tuple(r for r in ROLES if r != role)


METHODS = {
    "dynamic": dynamic(),
    **{f"dynamic, only {r} int8": dynamic(only(r)) for r in ROLES},
    "dynamic, proj fp32": dynamic(("proj",)),
    "dynamic, proj+out fp32": dynamic(("proj", "out")),
    "static MinMax": static("MinMax"),
    "static MinMax, proj fp32": static("MinMax", ("proj",)),
    "smoothquant 0.5 + dynamic": smoothed(dict.fromkeys(ROLES, 0.5)),
    "smoothquant 0.75 + dynamic": smoothed(dict.fromkeys(ROLES, 0.75)),
    "smoothquant 0.5 (proj 0.75) + dynamic": smoothed({**dict.fromkeys(SMOOTHED, 0.5), "proj": 0.75}),
    "smoothquant 0.5 + dynamic, proj unsmoothed": smoothed(dict.fromkeys(SMOOTHED, 0.5)),
    "smoothquant 0.5 + dynamic, proj fp32 (onnxruntime `--int8`)":
        lambda raw, out, encoder, ids: quantize_smooth(raw, out, encoder, ids),
    "nncf static, no smoothquant": nncf_static(-1),
    "nncf static, smoothquant 0.5": nncf_static(0.5),
    "nncf static, smoothquant 0.75": nncf_static(0.75),
    "nncf static, smoothquant 0.95": nncf_static(0.95),
    "nncf static, smoothquant 0.95, proj fp32": nncf_static(0.95, "proj"),
    "nncf static, smoothquant 0.5, proj fp32": nncf_static(0.5, "proj"),
    "nncf static, smoothquant 0.5, proj fp32 where outliers": nncf_static(0.5, "outliers"),
    "nncf static, smoothquant 0.5, proj fp32 where outliers, minmax ranges": nncf_static(0.5, "outliers", "minmax"),
    "nncf static, smoothquant 0.5, proj fp32, minmax ranges": nncf_static(0.5, "proj", "minmax"),
    "nncf static, smoothquant 0.5, out fp32, proj fp32 where outliers, minmax ranges":
        nncf_static(0.5, "outliers out", "minmax"),
    "nncf static, smoothquant 0.5, proj+out fp32, minmax ranges (openvino `--int8`)":
        nncf_static(ov_int8.ALPHA, " ".join(OV_FP32), ov_int8.RANGES),
}


def padded(tokenizer, texts: list[str]) -> tuple[list[dict], list[int]]:
    """Length-sorted, padded batches of 32 of `texts`, and the indices of `texts` in the order of the batches' rows."""
    ids, types = tokenizer.encode(texts, None, MAX_LEN)
    orders = length_batches([len(x) for x in ids], 32)
    return ([{k: v.numpy() for k, v in tokenizer.pad_batch([ids[i] for i in o], [types[i] for i in o]).items()}
             for o in orders], [i for o in orders for i in o])


def runner(path: Path):
    """batch -> last hidden state, of the graph at `path` (ONNX: ONNX Runtime; .xml: OpenVINO, f32 hint)."""
    if path.suffix == ".onnx":
        sess = session(path, 2)
        return lambda b: sess.run(["last_hidden_state"], b)[0]
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda b: request.infer(b)[compiled.outputs[0]]


def pooled(run, batches: list[dict]) -> np.ndarray:
    out = []
    for b in batches:
        hidden = run(b).astype(np.float64)
        mask = b["attention_mask"][..., None]
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sentences", type=int, default=1200)
    p.add_argument("--methods", default=";".join(METHODS), help="names of METHODS separated by ';' (default: all)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here (else print it)")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    from sklearn.linear_model import LogisticRegression

    encoder, tokenizer = load_encoder(minilm_dir())
    encoder = encoder.float().eval()
    texts = [r["text"] for r in rt_rows()]
    short = SHORT + sorted({t for t in texts if len(t.split()) <= 2})
    random.Random(1).shuffle(texts)
    every = texts[: args.sentences] + short
    evaluation, order = padded(tokenizer, every)
    order = np.array(order)  # the text of each row, in batch order
    is_short = order >= args.sentences
    train, train_y, test, test_y = rt_task(tokenizer)
    train, test = [{k: v.numpy() for k, v in b.items()} for b in train], [{k: v.numpy() for k, v in b.items()} for b in test]
    ids = calibration_ids(tokenizer)

    work = Path(tempfile.mkdtemp(prefix="int8_accuracy-"))
    raw = export_onnx(encoder, work / "raw.onnx")
    ref_session = runner(raw)
    ref = pooled(ref_session, evaluation)
    head = LogisticRegression(max_iter=3000).fit(pooled(ref_session, train), train_y)
    fp32_acc = float((head.predict(pooled(ref_session, test)) == test_y).mean())
    rows = [f"| fp32 (reference) | 1.00000 | 1.00000 | 1.00000 | 1.00000 | {100 * fp32_acc:.2f}% | – | – |"]
    for name in args.methods.split(";"):
        out = work / (re.sub(r"\W+", "_", name) + ".onnx")
        METHODS[name](raw, out, encoder, ids)
        got_session = runner(out if out.exists() else out.with_suffix(".xml"))
        got = pooled(got_session, evaluation)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        acc = float((head.predict(pooled(got_session, test)) == test_y).mean())
        rows.append(f"| {name} | {cos.min():.5f} | {cos[is_short].min():.5f} | {np.percentile(cos, 1):.5f} | "
                    f"{cos.mean():.5f} | {100 * acc:.2f}% | {100 * (acc - fp32_acc):+.2f} | "
                    f"{every[order[cos.argmin()]]!r} |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"all-MiniLM-L6-v2, ONNX Runtime and OpenVINO, {cpu_model()}: cosine of mean-pooled embeddings to fp32 over "
        f"{len(ref)} texts ({args.sentences} Rotten Tomatoes texts and {len(short)} short texts); linear probe on "
        f"{len(test_y)} held-out reviews; calibration: {len(ids)} BBC News sentences", "",
        "| method | min cosine | min cosine, short texts | p1 cosine | mean cosine | probe accuracy | delta (points) "
        "| worst text |",
        "|---|---:|---:|---:|---:|---:|---:|---|", *rows]) + "\n"
    if args.out:
        atomic_write_text(args.out, table)
    print(table)


if __name__ == "__main__":
    main()
