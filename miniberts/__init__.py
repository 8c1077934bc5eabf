"""miniberts: the 24 compact BERT models of Turc et al. (2019), from pre-training to serving.

    import miniberts
    model = miniberts.load("path/to/model")          # HF, Google TF or sentence-transformers directory, or a preset
    vectors = model.embed(["A sentence.", "Another one."])
    miniberts.finetune(model="tiny", task="rotten_tomatoes", out="runs/rt")

The recipes take the CLI's settings as keyword arguments (or their config dataclass, e.g. `miniberts.FinetuneConfig`)
and return the metrics the CLI writes. The model classes are here for writing your own loop.
"""

from .api import Model, distill, experiment, finetune, glue, load, pretrain
from .checkpoint import load_classifier, load_encoder, load_pretraining, save_hf
from .config import PRESETS, BertConfig, find_preset
from .errors import MinibertsError
from .model import BertForPreTraining, BertForSequenceClassification, BertModel
from .tokenizer import WordPieceTokenizer

# The recipes' configs import the training stack (data readers, metrics, plotting): loaded when first asked for, so
# `import miniberts` and every CLI command stay quick.
_CONFIGS = {"PretrainConfig": "pretrain", "FinetuneConfig": "finetune", "DistillConfig": "distill",
            "GlueConfig": "glue", "ExperimentConfig": "experiment"}

__all__ = ["Model", "load", "pretrain", "finetune", "distill", "glue", "experiment", "BertConfig", "PRESETS", "find_preset",
           "BertModel", "BertForPreTraining", "BertForSequenceClassification", "WordPieceTokenizer", "load_encoder",
           "load_classifier", "load_pretraining", "save_hf", "MinibertsError", *_CONFIGS]


def __getattr__(name: str):
    if name in _CONFIGS:
        import importlib

        return getattr(importlib.import_module(f"miniberts.train.{_CONFIGS[name]}"), name)
    raise AttributeError(f"module 'miniberts' has no attribute {name!r}")
