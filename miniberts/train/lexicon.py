"""A random student that inherits its teacher's lexicon: its word embeddings from the teacher's, projected to the
student's width by PCA. Used by `pretrain`, `finetune`/`distill` (--init-lexicon) and `experiment`
(--student-init).

Two sources of the teacher's per-token vectors:
  input   the teacher's input word-embedding matrix [V, H_t];
  output  model2vec's (Tulkens & van Dongen, 2024, github.com/MinishLab/model2vec): each vocabulary entry run alone
          through the teacher as [CLS] token [SEP], its last hidden state at the token's position (an entry is one
          id, so the mean over its positions without [CLS]/[SEP] is that one vector). Cached under the cache dir,
          keyed by the teacher's weights.

The scale: the projection is multiplied by one factor so its per-dimension spread (the root mean square over
dimensions of each dimension's standard deviation over the vocabulary) is that of the teacher's input word
embeddings, what the teacher's embedding LayerNorm was trained on (all-MiniLM-L6-v2: 0.055; its positions 0.022).
The student's positions and token types keep BERT's random init (0.02), so its embedding LayerNorm sees words and
positions in about the teacher's proportion, whichever the source (the output vectors are ten times wider spread,
0.59, than any input embedding). Projecting the teacher's positions on the words' principal components was
measured and left out: it keeps a spread of 0.008 of their 0.022, their variance lying outside the words' main
directions, and the output source's components are not in their space at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from ..checkpoint import load_encoder, load_tokenizer, read_checkpoint
from ..errors import MinibertsError
from ..fileio import atomic_path, make_folder
from ..hub import local_path
from ..model import BertModel
from ..tokenizer import WordPieceTokenizer
from .distill_targets import check_same_vocab, teacher_fingerprint

log = logging.getLogger("miniberts")

SOURCES = ("input", "output")
INIT_HELP = ("initialise the random student's word embeddings from this teacher's (a model directory with the "
             "student's WordPiece vocabulary), projected to the student's width by PCA")
SOURCE_HELP = ("with --init-lexicon: the teacher's input word embeddings (input) or each vocabulary entry's output "
               "vector when run alone through the teacher (output, model2vec-style; cached under the cache dir)")
FIELDS = ("init_lexicon", "lexicon_source")  # the config fields that carry it, in every recipe
BATCH = 512  # vocabulary entries per forward pass of the teacher (sequences of 3 tokens)


def identity_skip(cfg) -> tuple[str, ...]:
    """The lexicon fields a run's identity leaves out: both when no lexicon is inherited, so the identity of a
    random start is what it was before these fields existed."""
    return () if cfg.init_lexicon else FIELDS


def check_random_start(cfg, model: str, flag: str) -> None:
    """--init-lexicon initialises a random student: `model` must be a preset (or config .json), not weights."""
    if cfg.init_lexicon and local_path(model).is_dir():
        raise MinibertsError(f"--init-lexicon initialises a random student, but {flag} {model} is a model directory "
                             "with weights: give a preset (tiny, 2-256, ...)")


def teacher_vectors(teacher: str | Path, source: str, tokenizer: WordPieceTokenizer, cache_root: Path
                    ) -> tuple[np.ndarray, np.ndarray]:
    """([V, H_t] float32 per-token vectors of `source`, the teacher's input word embeddings [V, H_t])."""
    if source not in SOURCES:
        raise MinibertsError(f"--lexicon-source must be one of {', '.join(SOURCES)}, got {source!r}")
    ckpt = read_checkpoint(teacher)
    check_same_vocab(load_tokenizer(ckpt), tokenizer)
    inputs = ckpt.state["bert.embeddings.word.weight"].float().numpy()
    if source == "input":
        return inputs, inputs
    cache = cache_root / "lexicon" / f"{teacher_fingerprint(local_path(teacher))}-output.npy"
    if cache.is_file():
        return np.load(cache), inputs
    # Loading the teacher draws random numbers (its init before the weights): fork_rng keeps the student's stream
    # the same whether the cache was warm or cold.
    with torch.random.fork_rng(devices=[]):
        encoder, _ = load_encoder(ckpt)
    encoder.eval()
    ids = torch.arange(len(tokenizer))
    rows = []
    with torch.no_grad():
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            n = len(chunk)
            batch = torch.stack([torch.full((n,), tokenizer.cls_id), chunk, torch.full((n,), tokenizer.sep_id)], 1)
            hidden, _ = encoder(batch, torch.ones_like(batch))  # [n, 3, H_t]
            rows.append(hidden[:, 1].float())  # the token's own position: [CLS] and [SEP] left out
    matrix = torch.cat(rows).numpy()
    make_folder(cache.parent)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.save(f, matrix)
    log.info("lexicon: %d output vectors of %s cached in %s", len(matrix), teacher, cache)
    return matrix, inputs


def spread(matrix: np.ndarray) -> float:
    """Root mean square over dimensions of each dimension's standard deviation over the rows."""
    return float(np.sqrt(np.mean(matrix.std(0) ** 2)))


def project(vectors: np.ndarray, width: int, target_spread: float) -> tuple[np.ndarray, dict]:
    """[V, width] float32: `vectors` on their first `width` principal components, scaled to `target_spread`; and
    what was measured."""
    if width > min(vectors.shape):
        raise MinibertsError(f"the student is {width} wide and the teacher's lexicon {vectors.shape[1]}: PCA can only "
                             "narrow it (give a teacher at least as wide as the student)")
    # The eigenvectors of the [H_t, H_t] covariance: the exact PCA, and seconds faster than an SVD of the [V, H_t]
    # matrix (sklearn's own advice for many rows and few columns).
    pca = PCA(n_components=width, svd_solver="covariance_eigh")
    projected = pca.fit_transform(vectors)  # [V, width], centred
    scale = target_spread / spread(projected)
    stats = {"explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
             "spread": round(target_spread, 5), "scale": round(scale, 5)}
    return (projected * scale).astype(np.float32), stats


def init_embeddings(bert: BertModel, tokenizer: WordPieceTokenizer, teacher: str | Path, source: str,
                    cache_root: Path) -> dict:
    """Overwrite `bert`'s word embeddings with the teacher's lexicon; returns the measurements for the run's log."""
    vectors, inputs = teacher_vectors(teacher, source, tokenizer, cache_root)
    projected, stats = project(vectors, bert.cfg.hidden_size, spread(inputs))
    with torch.no_grad():
        bert.embeddings.word.weight.copy_(torch.from_numpy(projected))
    log.info("lexicon: %s vectors of %s projected to %d dims (%.0f%% of their variance), scaled to a spread of %.4f",
             source, teacher, bert.cfg.hidden_size, 100 * stats["explained_variance"], stats["spread"])
    return stats
