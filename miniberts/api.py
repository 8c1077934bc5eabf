"""The public Python API: `miniberts.load(path)` -> a Model that embeds, predicts and saves (inference/loaded_model.py),
and the recipes as functions (`miniberts.finetune(...)`, ...) that the CLI commands call too, so there is one code
path. The recipes take the fields of their config dataclasses, each checked by miniberts/settings.py before any file
is read.
"""

from __future__ import annotations

import dataclasses

from .errors import MinibertsError
from .inference.loaded_model import Model, load

__all__ = ["Model", "load", "pretrain", "finetune", "distill", "glue", "experiment"]


# --- the recipes ----------------------------------------------------------------------------------------------
# Each takes its config dataclass, or keyword arguments named as the CLI flags (with underscores), or both (the
# keywords replace the config's fields), and returns the metrics the CLI writes to the run's metrics.json.

def _config(cls, config, settings: dict, command: str):
    if config is not None and not isinstance(config, cls):
        raise MinibertsError(f"{command}: config must be a {cls.__name__}, got {type(config).__name__}")
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise MinibertsError(f"{command}: unknown settings {unknown} (the settings are `miniberts {command} --help`'s "
                             "flags, with underscores)")
    return dataclasses.replace(config, **settings) if config is not None else cls(**settings)


def pretrain(config=None, **settings) -> dict:
    """Masked-LM (+ NSP) pre-training: `train.pretrain.PretrainConfig` (model, train_files, out, steps or
    max_minutes, ...). Returns the held-out MLM loss/accuracy, steps, tokens seen and tokens/s."""
    from .train.pretrain import PretrainConfig, run

    return run(_config(PretrainConfig, config, settings, "pretrain"))


def finetune(config=None, **settings) -> dict:
    """Fine-tuning on a GLUE, built-in or user task: `train.finetune.FinetuneConfig` (model, out, task or train/dev
    files, ...). Returns the best dev epoch's metrics (and test metrics when the test split has labels)."""
    from .train.finetune import FinetuneConfig, run

    return run(_config(FinetuneConfig, config, settings, "finetune"))


def distill(config=None, **settings) -> dict:
    """Pre-trained Distillation of a fine-tuned teacher into a student: `train.distill.DistillConfig` (teacher,
    student, transfer files, the task's settings, ...). Returns the student's metrics."""
    from .train.distill import DistillConfig, run

    return run(_config(DistillConfig, config, settings, "distill"))


def glue(config=None, **settings) -> dict:
    """The model card's grid search per task (batch size x learning rate, best on dev): `train.glue.GlueConfig`
    (model, glue_dir, out, tasks, grid, ...). Returns the per-task results and the GLUE score row."""
    from .train.glue import GlueConfig, sweep

    return sweep(_config(GlueConfig, config, settings, "glue"))


def experiment(config=None, **settings) -> dict:
    """The paper's comparisons as one resumable grid: `train.experiment.ExperimentConfig` (students, strategies,
    pretrain_on, pretrain_steps, teacher, the task, transfer_sizes, seeds, workers, out, ...). Returns the summary
    (per group mean ± std, 95% t-interval, n; the paired differences) that OUT/summary.json holds."""
    from .train.experiment import ExperimentConfig, run

    return run(_config(ExperimentConfig, config, settings, "experiment"))
