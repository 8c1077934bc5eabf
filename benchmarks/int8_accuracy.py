"""Which int8 method keeps the real MiniLM accurate: cosine to fp32 on every sentence, and a linear probe's accuracy.

    python benchmarks/int8_accuracy.py [--sentences 1200] [--calibration 256] [--methods a,b] [--out FILE.md]

Every method quantizes the same ONNX export of all-MiniLM-L6-v2 (miniberts.export.export_onnx) with ONNX Runtime
and runs it in an ONNX Runtime session; the reference is the unquantized graph in the same runtime (within 5e-6 of
our torch fp32). Metrics, on mean-pooled embeddings (the model's own pooling):

- cosine to fp32 over `--sentences` Rotten Tomatoes texts (reviews and plot summaries, shuffled, seed 1): min, p1, mean;
- accuracy of the bench's linear probe (bench.engines.rt_task: a logistic-regression head fitted on fp32 features of
  800 fresh/rotten reviews, applied to each method's features of 400 held-out ones), and its delta to fp32.

Calibration (static methods): `--calibration` sentences of BBC News (the built-in pre-training text, not the
evaluation's Rotten Tomatoes), one sentence per calibration batch (no padding rows in the ranges).

Methods: `dynamic` (quantize_dynamic per channel: what `--int8` ran before), the same keeping FFN output (`proj`)
or attention output (`out`) MatMuls in fp32, and static QDQ (activations uint8 per tensor, weights int8 per output
channel; only the weight MatMuls, never the attention's activation x activation products) calibrated by MinMax,
Percentile or Entropy, with the same exclusions. Accuracy only: timings here are not the point (see the bench).
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from miniberts.bench.engines import rt_task
from miniberts.bench.harness import cpu_model, rt_rows
from miniberts.checkpoint import load_encoder
from miniberts.data.builtin import _bbc_documents, minilm_dir
from miniberts.export import export_onnx, session
from miniberts.fileio import atomic_write_text
from miniberts.infer import length_batches

MAX_LEN = 128


def weight_matmuls(model_path: Path, roles: tuple[str, ...]) -> list[str]:
    """Names of the MatMul nodes of the layers' Linear modules whose role (qkv, out, fc, proj) is in `roles`."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.name.split("/")[-2] in roles]


class Calibration:
    """What a method may calibrate on: the texts, as ONNX Runtime readers or as our encoder's input ranges."""

    def __init__(self, encoder, tokenizer, texts: list[str]):
        self.encoder, self.tokenizer, self.texts, self._maxima = encoder, tokenizer, texts, None

    def reader(self):
        return Reader(self.tokenizer, self.texts)

    def maxima(self) -> dict[str, np.ndarray]:
        if self._maxima is None:
            self._maxima = input_maxima(self.encoder, self.tokenizer, self.texts)
        return self._maxima


class Reader:
    """ONNX Runtime's CalibrationDataReader over tokenized texts, one text per batch."""

    def __init__(self, tokenizer, texts: list[str]):
        ids, types = tokenizer.encode(texts, None, MAX_LEN)
        self.items = iter([{"input_ids": np.array([i], np.int64), "attention_mask": np.ones((1, len(i)), np.int64),
                            "token_type_ids": np.array([t], np.int64)} for i, t in zip(ids, types)])

    def get_next(self):
        return next(self.items, None)


def dynamic(exclude: tuple[str, ...]):
    def make(raw: Path, out: Path, calib) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(raw), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=weight_matmuls(raw, exclude))
    return make


def static(method: str, exclude: tuple[str, ...], **extra):
    def make(raw: Path, out: Path, calib) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        keep = tuple(r for r in ("qkv", "out", "fc", "proj") if r not in exclude)
        quantize_static(str(raw), str(out), calib.reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(raw, keep),
                        calibrate_method=getattr(CalibrationMethod, method), extra_options=extra)
    return make


ROLES = {"qkv": "attn.qkv", "out": "attn.out", "fc": "fc", "proj": "proj"}  # ONNX node role -> module path


def input_maxima(encoder, tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """Per input channel, the max |x| over the calibration tokens of every layer Linear's input, keyed by the ONNX
    MatMul name. Our unpadded forward hands the Linears real tokens only, so padding never enters the ranges."""
    import torch

    maxima, hooks = {}, []
    for i, layer in enumerate(encoder.layers):
        for role, path in ROLES.items():
            name = f"/layers.{i}/{path.replace('.', '/')}/MatMul"

            def hook(module, args, name=name):
                m = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
                maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)
            hooks.append(layer.get_submodule(path).register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for b in padded(tokenizer, texts):
                encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    finally:
        for h in hooks:
            h.remove()
    return {k: v.numpy() for k, v in maxima.items()}


def smooth(raw: Path, out: Path, maxima: dict[str, np.ndarray], alphas: dict[str, float]) -> None:
    """SmoothQuant's scale migration (Xiao et al. 2023, eq. 4): X W = (X / s)(s W), s_j = max|X_j|^a / max|W_j|^(1-a),
    with X / s as a Mul node before each chosen MatMul (post-LN BERT feeds the same LayerNorm output to the residual,
    so the division cannot fold into the LayerNorm) and s W folded into the weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(raw))
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in maxima and node.name.split("/")[-2] in alphas:
            alpha = alphas[node.name.split("/")[-2]]
            w = numpy_helper.to_array(inits[node.input[1]])
            s = np.maximum(maxima[node.name], 1e-5) ** alpha / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - alpha)
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


def smoothed_dynamic(alphas: dict[str, float], exclude: tuple[str, ...] = ()):
    def make(raw: Path, out: Path, calib) -> None:
        smooth(raw, out.with_suffix(".smooth.onnx"), calib.maxima(), alphas)
        dynamic(exclude)(out.with_suffix(".smooth.onnx"), out, calib)
    return make


METHODS = {
    "dynamic": dynamic(()),
    "dynamic (proj fp32)": dynamic(("proj",)),
    "dynamic (proj+out fp32)": dynamic(("proj", "out")),
    "static minmax": static("MinMax", ()),
    "static minmax (proj fp32)": static("MinMax", ("proj",)),
    "static minmax (proj+out fp32)": static("MinMax", ("proj", "out")),
    "static percentile": static("Percentile", ()),
    "static percentile (proj fp32)": static("Percentile", ("proj",)),
    "static entropy": static("Entropy", ()),
    "smoothquant 0.5 + dynamic": smoothed_dynamic(dict.fromkeys(ROLES, 0.5)),
    "smoothquant 0.75 + dynamic": smoothed_dynamic(dict.fromkeys(ROLES, 0.75)),
    "smoothquant 0.5 + dynamic (proj fp32)": smoothed_dynamic(dict.fromkeys(ROLES, 0.5), ("proj",)),
    "smoothquant 0.5, proj unsmoothed + dynamic": smoothed_dynamic(dict.fromkeys(("qkv", "out", "fc"), 0.5)),
    "smoothquant 0.5, proj 0.75 + dynamic": smoothed_dynamic({**dict.fromkeys(("qkv", "out", "fc"), 0.5), "proj": 0.75}),
    "smoothquant 0.5, proj 0.9 + dynamic": smoothed_dynamic({**dict.fromkeys(("qkv", "out", "fc"), 0.5), "proj": 0.9}),
    "smoothquant 0.5, proj 0.25 + dynamic": smoothed_dynamic({**dict.fromkeys(("qkv", "out", "fc"), 0.5), "proj": 0.25}),
}


def pooled(sess, batches: list[dict]) -> np.ndarray:
    out = []
    for b in batches:
        feed = {k: v.numpy() for k, v in b.items()}
        hidden = sess.run(["last_hidden_state"], feed)[0].astype(np.float64)
        mask = feed["attention_mask"][..., None]
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return np.concatenate(out)


def padded(tokenizer, texts: list[str]) -> list[dict]:
    ids, types = tokenizer.encode(texts, None, MAX_LEN)
    return [tokenizer.pad_batch([ids[i] for i in o], [types[i] for i in o])
            for o in length_batches([len(x) for x in ids], 32)]


def calibration_texts(n: int) -> list[str]:
    sentences = [s for doc in _bbc_documents() for s in doc if len(s.split()) >= 4]
    random.Random(0).shuffle(sentences)
    return sentences[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sentences", type=int, default=1200)
    p.add_argument("--calibration", type=int, default=256)
    p.add_argument("--methods", default=";".join(METHODS), help="names of METHODS separated by ';' (default: all)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here (else print it)")
    args = p.parse_args()
    logging.disable(logging.WARNING)

    model_dir = minilm_dir()
    encoder, tokenizer = load_encoder(model_dir)
    encoder = encoder.float().eval()
    texts = [r["text"] for r in rt_rows()]
    random.Random(1).shuffle(texts)
    # Eval batches: length-sorted, padded (pooled() follows the sorted order; every method sees the same one).
    evaluation = padded(tokenizer, texts[: args.sentences])
    train, train_y, test, test_y = rt_task(tokenizer)
    calib = calibration_texts(args.calibration)
    calibration = Calibration(encoder, tokenizer, calib)

    from sklearn.linear_model import LogisticRegression

    work = Path(tempfile.mkdtemp(prefix="int8_accuracy-"))
    raw = export_onnx(encoder, work / "raw.onnx")
    ref_sess = session(raw, 2)
    ref = pooled(ref_sess, evaluation)
    head = LogisticRegression(max_iter=3000).fit(pooled(ref_sess, train), train_y)
    fp32_acc = float((head.predict(pooled(ref_sess, test)) == test_y).mean())
    rows = [f"| fp32 (reference) | 1.00000 | 1.00000 | 1.00000 | {100 * fp32_acc:.2f}% | – |"]
    print(rows[0], flush=True)
    for name in args.methods.split(";"):
        out = work / (re.sub(r"\W+", "_", name) + ".onnx")
        start = time.perf_counter()
        METHODS[name](raw, out, calibration)
        build_s = time.perf_counter() - start
        sess = session(out, 2)
        got = pooled(sess, evaluation)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        acc = float((head.predict(pooled(sess, test)) == test_y).mean())
        rows.append(f"| {name} | {cos.min():.5f} | {np.percentile(cos, 1):.5f} | {cos.mean():.5f} | "
                    f"{100 * acc:.2f}% | {100 * (acc - fp32_acc):+.2f} |")
        print(rows[-1], f"(built in {build_s:.0f} s)", flush=True)
    table = "\n".join([
        f"int8 accuracy of all-MiniLM-L6-v2 ({cpu_model()}): cosine of mean-pooled embeddings to fp32 over "
        f"{len(ref)} Rotten Tomatoes texts; linear probe on {len(test_y)} held-out reviews; "
        f"calibration: {len(calib)} BBC News sentences", "",
        "| method | min cosine | p1 cosine | mean cosine | probe accuracy | delta (points) |",
        "|---|---:|---:|---:|---:|---:|", *rows]) + "\n"
    if args.out:
        atomic_write_text(args.out, table)
    print(table)


if __name__ == "__main__":
    main()
