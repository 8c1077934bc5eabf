"""What every engine backend shares: a torch-facing module around a numpy `run`, and the classifier on top of it."""

from __future__ import annotations

import math

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

    def packs(self) -> bool:
        """Whether `run_packed` runs here (an engine with a packed graph: inference/packing.py)."""
        return False

    def run_packed(self, input_ids: np.ndarray, token_type_ids: np.ndarray, position_ids: np.ndarray,
                   segment_ids: np.ndarray) -> np.ndarray:
        """The last hidden states [rows, width, H] (float32, possibly the engine's own buffer, which its next run
        overwrites) of rows of several inputs each (`BertModel.packed_hidden`'s arguments, int64 numpy)."""
        raise MinibertsError(f"the {self.name} backend does not run packed rows")

    def run_views(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """`run` for a caller that reads the outputs at once: they may be the engine's own buffers, which its next
        run overwrites (no copy). Default: `run`."""
        return self.run(input_ids, attention_mask, token_type_ids)

    def checked_run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, views: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
        """`run` (`run_views` with `views`), once the length is known to fit the model's positions."""
        if ids.shape[1] > self.cfg.max_position_embeddings:
            raise MinibertsError(f"sequence length {ids.shape[1]} exceeds the model's {self.cfg.max_position_embeddings} positions")
        return (self.run_views if views else self.run)(ids, mask, types)

    def embed_one(self, ids: list[int], type_ids: list[int], pooling: str, normalize: bool) -> np.ndarray:
        """One text's sentence vector, float32 [1, H], in numpy from end to end: the engine's own call plus its
        pooling, no torch tensor on the way (the path of a one-text `Model.embed`). One row has no padding, so "mean"
        is the mean over all its positions; `normalize` is torch.nn.functional.normalize's x / max(||x||, 1e-12).
        `pooling`: "cls", "pooler" or "mean", checked by the caller (batching.embed_step).

        As few numpy calls as the arithmetic needs: right after the engine every one runs from cold caches (on the
        real MiniLM ~30 us each; mean, norm and division took 0.17 ms where a sum and one scale take 0.08)."""
        row = np.array([ids], np.int64)
        hidden, pooled = self.checked_run(row, np.ones_like(row), np.array([type_ids], np.int64), views=True)
        vector = pooled if pooling == "pooler" else hidden[:, 0] if pooling == "cls" else np.add.reduce(hidden, axis=1)
        scale = 1 / len(ids) if pooling == "mean" else 1.0  # the mean, as the sum times 1/n
        if normalize:
            scale /= max(math.sqrt(float(np.add.reduce(vector * vector, axis=None))) * scale, 1e-12)
        return np.multiply(vector, scale, dtype=np.float32)  # float32, a new array: never the engine's buffer

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
