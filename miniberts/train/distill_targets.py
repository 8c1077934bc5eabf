"""Teacher soft targets for Pre-trained Distillation (Turc et al., 2019, section 3), and the distillation losses.

The teacher labels the unlabeled transfer text once; its logits are cached on disk under a key made of the
teacher's weights, config and tokenizer files, the texts and the max length, so a sweep of students never recomputes
them and any change to teacher or data invalidates the cache. Losses are computed in float32 (as torchtune does) whatever the
autocast precision of the forward pass.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_classifier
from ..device import pick_device, resolve_dtype
from ..errors import MinibertsError
from ..fileio import atomic_path, atomic_write_text
from ..inference.predict import predict_logits
from ..tokenizer import FILES as TOKENIZER_FILES
from ..tokenizer import WordPieceTokenizer

log = logging.getLogger("miniberts")

# What a teacher's logits depend on: its weights and config, and how it tokenizes (an edited vocabulary or another
# casing gives other token ids for the same texts, so other logits).
TEACHER_FILES = ("config.json", "bert_config.json", "model.safetensors", "pytorch_model.bin") + TOKENIZER_FILES


def teacher_fingerprint(teacher_dir: Path) -> str:
    """sha256 over the teacher's config, weight and tokenizer files (TF shards included). Kept per (file, size,
    mtime): a sweep of students over one teacher reads its weights once while they stay unchanged."""
    files = [p for p in sorted(Path(teacher_dir).iterdir()) if p.name in TEACHER_FILES or ".ckpt" in p.name]
    return _hash_files(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=8)
def _hash_files(stamps: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamps:
        path = Path(name)
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def data_fingerprint(texts: list[str], pairs: list[str] | None, max_length: int) -> str:
    h = hashlib.sha256(f"max_length={max_length};pairs={pairs is not None};n={len(texts)}".encode())
    for i, text in enumerate(texts):
        h.update(text.encode("utf-8") + b"\x00")
        if pairs is not None:
            h.update(pairs[i].encode("utf-8") + b"\x00")
    return h.hexdigest()


def check_same_vocab(teacher: WordPieceTokenizer, student: WordPieceTokenizer) -> None:
    if teacher.vocab != student.vocab:
        raise MinibertsError(
            f"teacher vocab {teacher.vocab_path} ({len(teacher)} tokens) differs from student vocab "
            f"{student.vocab_path} ({len(student)} tokens): distillation needs the same WordPiece vocabulary"
        )
    if teacher.lowercase != student.lowercase:  # the same vocabulary, other token ids for any capitalised word
        raise MinibertsError(
            f"teacher {teacher.vocab_path.parent} is {casing(teacher)} but student {student.vocab_path.parent} is "
            f"{casing(student)}: distillation needs the same tokenization (both cased or both uncased)"
        )


def casing(tokenizer: WordPieceTokenizer) -> str:
    return "uncased (lowercases its input)" if tokenizer.lowercase else "cased"


Split = tuple[list[str], "list[str] | None"]  # (texts, second segments of pairs or None)


def teacher_logits(teacher_dir: str | Path, splits: list[Split], max_length: int, cache_dir: Path,
                   batch_size: int = 64, dtype: str = "auto") -> list[np.ndarray]:
    """[N, num_labels] float32 logits of the fine-tuned teacher for each split, each cached on disk. The teacher is
    loaded once, and only when some split is not cached yet."""
    teacher_dir = Path(teacher_dir)
    weights = teacher_fingerprint(teacher_dir)
    teacher = None
    out = []
    for texts, pairs in splits:
        key = hashlib.sha256((weights + data_fingerprint(texts, pairs, max_length)).encode()).hexdigest()[:24]
        path = Path(cache_dir) / f"{key}.npy"
        if path.is_file():
            log.info("teacher logits: cached %s", path)
            out.append(np.load(path))
            continue
        if teacher is None:
            teacher = load_classifier(teacher_dir)
            if not teacher[0].cfg.id2label and not teacher[0].cfg.regression:
                raise MinibertsError(f"{teacher_dir}: the teacher has no task head; fine-tune it first")
        model, tokenizer = teacher
        device = pick_device()
        logits = predict_logits(model, tokenizer, texts, pairs, max_length, batch_size, device,
                                resolve_dtype(dtype, device), desc="teacher").numpy()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, logits)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"teacher": str(teacher_dir), "examples": len(texts), "max_length": max_length,
             "id2label": model.cfg.id2label, "regression": model.cfg.regression}, indent=2))
        out.append(logits)
    return out


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's tempered distribution, scaled by T^2 so gradients keep
    their size across temperatures (Hinton et al., 2015). One output = regression: MSE to the teacher's score."""
    s, t = student_logits.float(), teacher_logits.float()
    if s.shape[-1] == 1:
        return F.mse_loss(s.squeeze(-1), t.squeeze(-1))
    target = F.softmax(t / temperature, dim=-1)
    return -(target * F.log_softmax(s / temperature, dim=-1)).sum(-1).mean() * temperature**2


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean KL(teacher || student) at T=1, a measure of how well the student imitates the teacher."""
    s, t = F.log_softmax(student_logits.float(), -1), F.log_softmax(teacher_logits.float(), -1)
    return float(F.kl_div(s, t, log_target=True, reduction="batchmean"))

