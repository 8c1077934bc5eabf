"""Batched inference: read texts, run the encoder in length-sorted batches, return results in input order.

Sorting by length before batching keeps padding small; together with the model's unpadded execution almost no
work is spent on padding. Results are put back in the order of the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.tabular import decoded_lines
from ..device import autocast
from ..errors import DataError, MinibertsError
from ..tokenizer import WordPieceTokenizer

log = logging.getLogger("miniberts")


def read_lines(path: str | Path) -> list[str]:
    """One text per line; lines are split on '\\n' only (a trailing '\\r' is dropped). Errors name the line. Every
    line is kept, blank ones too: `embed` and `predict` write output row i for input line i."""
    texts = [line.removesuffix("\n").removesuffix("\r") for _, line in decoded_lines(Path(path))]
    if not texts:
        raise DataError(f"{path}: the file is empty (expected one text per line)")
    return texts


def unlabeled_texts(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of a file of unlabeled training text (a transfer set): a blank or whitespace-only line
    is not a text, so it is skipped, and how many were is logged."""
    lines = read_lines(path)
    texts = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not texts:
        raise DataError(f"{path}: no text (only blank lines; expected one text per line)")
    if len(texts) < len(lines):
        log.info("%s: skipped %d blank line(s); %d texts", path, len(lines) - len(texts), len(texts))
    return texts


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def run_batches(tokenizer: WordPieceTokenizer, texts: list[str], pairs: list[str] | None, max_length: int,
                batch_size: int, step: Callable[[dict[str, torch.Tensor]], torch.Tensor], device: torch.device,
                dtype: torch.dtype, desc: str = "") -> torch.Tensor:
    """Tokenize, batch by length, apply `step` (batch -> [b, ...] tensor) under autocast; rows in input order."""
    ids, type_ids = tokenizer.encode(texts, pairs, max_length)
    return run_encoded(tokenizer, ids, type_ids, batch_size, step, device, dtype, desc)


def run_encoded(tokenizer: WordPieceTokenizer, ids: list[list[int]], type_ids: list[list[int]], batch_size: int,
                step: Callable[[dict[str, torch.Tensor]], torch.Tensor], device: torch.device, dtype: torch.dtype,
                desc: str = "", forwards: list[tuple[list[int], int]] | None = None) -> torch.Tensor:
    """`run_batches` on texts already tokenized (`tokenizer.encode`): a server tokenizes off its model thread.
    `forwards`: the batches to run instead of `length_batches` of `batch_size`, as (row indices, padded width) each
    (a server plans its own, serve/forwards.py)."""
    # no_grad rather than inference_mode: autocast caches its bf16 weight casts only outside inference mode.
    if len(ids) == 1:  # one text (a request, a one-sentence call): no sorting, padding, progress or reordering
        inputs = tokenizer.pad_batch(ids, type_ids)  # one row: nothing to pad
        with torch.no_grad(), autocast(device, dtype):
            return step({k: v.to(device) for k, v in inputs.items()}).float().cpu()
    if forwards is None:
        forwards = [(batch, 0) for batch in length_batches([len(x) for x in ids], batch_size)]
    batches = [batch for batch, _ in forwards]
    outputs = []
    # A progress bar only when asked for: even a disabled tqdm costs a one-text call a noticeable share of its time.
    with torch.no_grad(), autocast(device, dtype):
        for batch, width in tqdm(forwards, desc=desc, unit="batch", leave=False) if desc else forwards:
            inputs = tokenizer.pad_batch([ids[i] for i in batch], [type_ids[i] for i in batch], width)
            outputs.append(step({k: v.to(device) for k, v in inputs.items()}).float().cpu())
    results = torch.empty((len(ids), *outputs[0].shape[1:]), dtype=outputs[0].dtype)
    results[torch.tensor([i for batch in batches for i in batch])] = torch.cat(outputs)  # back to input order
    return results


POOLINGS = ("cls", "pooler", "mean")  # what `pool` computes; "auto" is resolved by the caller (Model.embed)


def pool(hidden: torch.Tensor, pooled: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """'cls': the raw [CLS] hidden state (sentence-transformers' CLS pooling); 'pooler': BERT's tanh pooled output;
    'mean': the average of the real tokens' states (sentence-transformers' mean pooling)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        return pooled
    # [B, 1, S] @ [B, S, H]: the masked sum as one batched matmul, without a masked copy of the hidden states
    mask = attention_mask.to(hidden.dtype).unsqueeze(1)
    return torch.bmm(mask, hidden).squeeze(1) / mask.sum(-1)


def embed(encoder, tokenizer: WordPieceTokenizer, texts: list[str], pooling: str = "mean", max_length: int = 512,
          batch_size: int = 32, device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
          progress: bool = False, normalize: bool = False) -> np.ndarray:
    """[N, H] float32 sentence embeddings, one row per text, in order; `normalize` L2-normalises every row."""
    step = embed_step(encoder.eval().to(device), pooling, normalize)
    out = run_batches(tokenizer, texts, None, max_length, batch_size, step, device, dtype, "embed" if progress else "")
    return out.numpy()


def embed_step(encoder, pooling: str, normalize: bool) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """A `run_batches` step: one padded batch -> its pooled (and maybe L2-normalised) sentence vectors [b, H]."""
    if pooling not in POOLINGS:
        raise MinibertsError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")

    def step(batch):
        hidden, pooled = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        vectors = pool(hidden.float(), pooled.float(), batch["attention_mask"], pooling)  # pooled in fp32 under bf16
        return F.normalize(vectors, dim=-1) if normalize else vectors

    return step


def check_finite(outputs: torch.Tensor | np.ndarray, where: str) -> None:
    """NaN or infinite outputs mean broken weights (a diverged run, a damaged file): refuse rather than write them."""
    if not np.isfinite(np.asarray(outputs)).all():
        raise MinibertsError(f"{where}: the model produced non-finite outputs (NaN or infinite weights?)")
