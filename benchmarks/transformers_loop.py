"""The baseline of benchmarks/profile_call.py: a plain `transformers` embedding loop, as a user writes it.

    python benchmarks/transformers_loop.py MODEL_DIR INPUT.txt OUT.npy

`AutoTokenizer` (fast) and `AutoModel` (SDPA attention, fp32), batches of 32 in the file's order, padded to the
longest of each batch and truncated to the model's positions, mean pooling over the real tokens, under
`torch.inference_mode`; one .npy of float32 [lines, hidden]. No sorting by length, no engine: what the issue's
"plain transformers loop" measures, run by profile_call.py as a whole process beside `miniberts embed`.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

BATCH = 32


def main(model_dir: str, path: str, out: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    rows = []
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = tok(texts[i : i + BATCH], padding=True, truncation=True,
                      max_length=model.config.max_position_embeddings, return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # [b, S, H]
            mask = enc["attention_mask"].unsqueeze(-1).float()  # [b, S, 1]
            rows.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    np.save(out, np.concatenate(rows))


if __name__ == "__main__":
    main(*sys.argv[1:4])
