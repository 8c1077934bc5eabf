"""`miniberts export MODEL --format sentence-transformers --out DIR`: a directory that `SentenceTransformer(DIR)` loads
and text-embeddings-inference serves, embedding as `Model.embed` does.

The files are sentence-transformers' own layout (sentence_transformers/SentenceTransformer.py, `save`): the Hugging
Face model at the root (config.json, model.safetensors, vocab.txt, tokenizer.json), `modules.json` (Transformer,
Pooling, optionally Normalize), `1_Pooling/config.json`, `sentence_bert_config.json` (max_seq_length) and
`config_sentence_transformers.json`. A classifier exports its encoder: sentence-transformers embeds, it has no head.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import save_hf
from ..errors import MinibertsError
from ..fileio import atomic_write_text, build_dir, check_folder
from ..sbert import MODES, SentenceLayout, write_layout
from .config import EmbedConfig
from .loaded_model import load


def export_sentence_transformers(source: str | Path, out: str | Path) -> Path:
    """Write the model at `source` (anything `miniberts.load` takes) to the new folder `out`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MinibertsError(f"{out}: exists and is not an empty folder (the export writes a new folder)")
    check_folder(out)  # a path under a file or a read-only folder: one line, before the model is loaded
    model = load(source, "cpu")
    pooling, normalize, length = model.embedding_settings(EmbedConfig())
    if pooling not in MODES.values():
        raise MinibertsError(f"{source}: pools with {pooling!r}, which sentence-transformers has no module for")
    layout = SentenceLayout(out, pooling, normalize, length, model.layout.lowercase if model.layout else False,
                            model.layout.prompts if model.layout else {},
                            model.layout.default_prompt_name if model.layout else None)

    def write(folder: Path) -> None:
        save_hf(model.encoder, model.tokenizer, folder)
        write_layout(layout, folder, model.config.hidden_size)
        atomic_write_text(folder / "config_sentence_transformers.json", json.dumps(
            {"prompts": layout.prompts, "default_prompt_name": layout.default_prompt_name,
             "similarity_fn_name": "cosine"}, indent=2))

    if out.exists():
        out.rmdir()
    build_dir(out, write)
    return out
