"""What every engine backend shares: a torch-facing module around a numpy `run`, and the classifier on top of it."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import MinibertsError
from ...model import BertForSequenceClassification


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


class EngineEncoder(nn.Module):
    """An exported encoder run by an engine. Subclasses set `name`, `precision` (what the engine runs in) and
    implement `run(input_ids, attention_mask, token_type_ids)` on int64 numpy [B, S] arrays -> (hidden [B, S, H],
    pooled [B, H]) float32 numpy. Read only the real positions of `hidden`, as with the torch encoder."""

    name = "engine"

    def __init__(self, cfg, precision: str):
        super().__init__()
        self.cfg = cfg
        self.precision = precision

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple[Tensor, Tensor]:
        ids = as_numpy(input_ids).astype(np.int64, copy=False)
        mask = np.ones_like(ids) if attention_mask is None else as_numpy(attention_mask).astype(np.int64, copy=False)
        types = np.zeros_like(ids) if token_type_ids is None else as_numpy(token_type_ids).astype(np.int64, copy=False)
        hidden, pooled = self.checked_run(ids, mask, types)
        return torch.from_numpy(np.ascontiguousarray(hidden, dtype=np.float32)), torch.from_numpy(
            np.ascontiguousarray(pooled, dtype=np.float32))

    def checked_run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`run`, once the length is known to fit the model's positions."""
        if ids.shape[1] > self.cfg.max_position_embeddings:
            raise MinibertsError(f"sequence length {ids.shape[1]} exceeds the model's {self.cfg.max_position_embeddings} positions")
        return self.run(ids, mask, types)

    def embed_one(self, ids: list[int], type_ids: list[int], pooling: str, normalize: bool) -> np.ndarray:
        """One text's sentence vector, float32 [1, H], in numpy from end to end: the engine's own call plus its
        pooling, no torch tensor on the way (the path of a one-text `Model.embed`). One row has no padding, so "mean"
        is the mean over all its positions; `normalize` is torch.nn.functional.normalize's x / max(||x||, 1e-12).
        `pooling`: "cls", "pooler" or "mean", checked by the caller (batching.embed_step)."""
        row = np.array([ids], np.int64)
        hidden, pooled = self.checked_run(row, np.ones_like(row), np.array([type_ids], np.int64))
        vector = pooled if pooling == "pooler" else hidden[:, 0] if pooling == "cls" else hidden.mean(1)
        vector = np.asarray(vector, dtype=np.float32)
        if normalize:
            vector = vector / np.maximum(np.linalg.norm(vector, axis=-1, keepdims=True), np.float32(1e-12))
        return vector

    def extra_repr(self) -> str:
        return f"{self.name}, {self.precision}"


class EngineClassifier(nn.Module):
    """A classifier whose encoder runs in an engine; the head (one Linear on the pooled output) stays in torch."""

    def __init__(self, encoder: EngineEncoder, model: BertForSequenceClassification):
        super().__init__()
        self.cfg = model.cfg
        self.bert = encoder
        self.classifier = model.classifier.float().eval()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Tensor:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(pooled)
