"""The one validation layer for settings (miniberts/settings.py): types and bounds from field metadata."""

from dataclasses import dataclass, field

import pytest

from miniberts.settings import SettingsError, validate


@dataclass
class Example:
    batch_size: int = field(default=32, metadata={"min": 1})
    lr: float = field(default=5e-5, metadata={"gt": 0})
    dropout: float = field(default=0.1, metadata={"min": 0, "lt": 1})
    dtype: str = field(default="auto", metadata={"choices": ("auto", "fp32", "bf16")})
    files: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list, metadata={"min": 1})
    flag: bool = False

    def __post_init__(self):
        validate(self)


def test_defaults_pass():
    Example()
    Example(lr=1, sizes=[1, 2], files=["a"])  # an int is a valid float


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"batch_size": "32"}, "--batch-size must be a whole number, got '32'"),
    ({"batch_size": True}, "--batch-size must be a whole number, got True"),
    ({"lr": -1.0}, "--lr must be greater than 0, got -1.0"),
    ({"lr": float("nan")}, "--lr must be a number, not NaN, got nan"),
    ({"dropout": 1.0}, "--dropout must be less than 1, got 1.0"),
    ({"dtype": "fp16"}, "--dtype must be one of auto, fp32, bf16, got 'fp16'"),
    ({"files": "a.txt"}, "--files must be a list, got 'a.txt'"),
    ({"sizes": [3, 0]}, "--sizes must be at least 1, got 0"),
    ({"flag": "yes"}, "--flag must be true or false, got 'yes'"),
])
def test_bad_settings_name_the_flag_the_bound_and_the_value(kwargs, message):
    with pytest.raises(SettingsError) as e:
        Example(**kwargs)
    assert str(e.value) == message


@dataclass
class Optional:
    max_length: int | None = field(default=None, metadata={"min": 3})
    normalize: bool | None = None

    def __post_init__(self):
        validate(self)


def test_optional_fields_allow_none_and_check_anything_else():
    Optional()
    Optional(max_length=3, normalize=False)
    with pytest.raises(SettingsError, match=r"^--max-length must be at least 3, got 0$"):
        Optional(max_length=0)
    with pytest.raises(SettingsError, match=r"^--max-length must be a whole number, got '8'$"):
        Optional(max_length="8")
    with pytest.raises(SettingsError, match=r"^--normalize must be true or false, got 1$"):
        Optional(normalize=1)


# --- every recipe's config is checked, by the Python API and by the CLI, before any file is read --------------

from miniberts.cli import main  # noqa: E402
from miniberts.train.distill import DistillConfig  # noqa: E402
from miniberts.train.finetune import FinetuneConfig, LoopConfig  # noqa: E402
from miniberts.train.glue import GlueConfig  # noqa: E402
from miniberts.train.pretrain import PretrainConfig  # noqa: E402
from miniberts.train.quickstart import QuickstartConfig  # noqa: E402


@pytest.mark.parametrize("cls, kwargs, message", [
    (LoopConfig, {"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    (FinetuneConfig, {"lr": -1.0}, "--lr must be greater than 0, got -1.0"),
    (FinetuneConfig, {"epochs": 0}, "--epochs must be at least 1, got 0"),
    (FinetuneConfig, {"warmup_ratio": 1.5}, "--warmup-ratio must be at most 1, got 1.5"),
    (FinetuneConfig, {"max_length": -3}, "--max-length must be at least 2, got -3"),
    (FinetuneConfig, {"eval_batch_size": 0}, "--eval-batch-size must be at least 1, got 0"),
    (FinetuneConfig, {"dtype": "fp16"}, "--dtype must be one of auto, fp32, bf16, got 'fp16'"),
    (FinetuneConfig, {"task_type": "ranking"}, "--task-type must be one of '', classification, regression, got 'ranking'"),
    (DistillConfig, {"temperature": 0.0}, "--temperature must be greater than 0, got 0.0"),
    (DistillConfig, {"alpha": 2.0}, "--alpha must be at most 1, got 2.0"),
    (PretrainConfig, {"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    (PretrainConfig, {"grad_accum": 0}, "--grad-accum must be at least 1, got 0"),
    (PretrainConfig, {"lr": float("nan")}, "--lr must be a number, not NaN, got nan"),
    (PretrainConfig, {"dropout": 1.0}, "--dropout must be less than 1, got 1.0"),
    (PretrainConfig, {"eval_fraction": 1.0}, "--eval-fraction must be less than 1, got 1.0"),
    (PretrainConfig, {"save_every": 0}, "--save-every must be at least 1, got 0"),
    (GlueConfig, {"grid": "huge"}, "--grid must be one of card, quick, got 'huge'"),
    (GlueConfig, {"batch_sizes": [16, 0]}, "--batch-sizes must be at least 1, got 0"),
    (GlueConfig, {"seeds": 0}, "--seeds must be at least 1, got 0"),
    (QuickstartConfig, {"pretrain_steps": 0}, "--pretrain-steps must be at least 1, got 0"),
    (QuickstartConfig, {"n_train": 0}, "--n-train must be at least 2, got 0"),
])
def test_recipe_configs_check_their_bounds(cls, kwargs, message):
    with pytest.raises(SettingsError) as e:
        cls(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--model", "tiny", "--out", "OUT", "--train", "absent.csv", "--dev", "absent.csv", "--lr", "-1"],
     "--lr must be greater than 0, got -1.0"),
    (["pretrain", "--model", "tiny", "--train-files", "absent.txt", "--out", "OUT", "--steps", "5", "--batch-size",
      "0"], "--batch-size must be at least 1, got 0"),
    (["distill", "--teacher", "T", "--student", "tiny", "--transfer", "absent.txt", "--train", "absent.csv",
      "--dev", "absent.csv", "--out", "OUT", "--temperature", "-2"], "--temperature must be greater than 0, got -2.0"),
    (["glue", "--model", "tiny", "--out", "OUT", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["quickstart", "--out", "OUT", "--student-epochs", "0"], "--student-epochs must be at least 1, got 0"),
])
def test_cli_settings_fail_in_one_line_before_any_file_is_read(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"miniberts {argv[0]}: error: {message}"
    assert list(tmp_path.iterdir()) == []  # no run directory was made


def test_max_length_above_the_models_positions_fails_before_the_data_is_read(tmp_path, capsys, tiny):
    # The data files do not exist: the model's config.json is read first, so the length error comes first.
    argv = ["finetune", "--model", tiny, "--out", str(tmp_path / "run"), "--train", "absent.csv", "--dev",
            "absent.csv", "--text-column", "t", "--label-column", "y", "--max-length", "600"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"miniberts finetune: error: --max-length must be at most the 512 positions of the model {tiny} "
        f"({tiny}/config.json), got 600")
    assert not (tmp_path / "run").exists()
    assert main(["finetune", "--model", "tiny", "--out", str(tmp_path / "run"), "--task", "rotten_tomatoes",
                 "--max-length", "513"]) == 2
    assert "at most the 512 positions of the model tiny (preset 2-128), got 513" in capsys.readouterr().err


# --- --config JSON ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (None, "{path}: file not found"),
    ("{\"lr\": 1e-4,", "{path}:1: not valid JSON (Expecting property name enclosed in double quotes, column 13)"),
    ("[1, 2]", "{path}: expected a JSON object of settings, found a list"),
    ("{\"batch_size\": \"32\"}", "{path}: 'batch_size': --batch-size must be a whole number, got '32'"),
    ("{\"batch_size\": 0}", "{path}: 'batch_size': --batch-size must be at least 1, got 0"),
    ("{\"lerning_rate\": 0.1}", "{path}: unknown setting 'lerning_rate'"),
    ("{\"batch_sise\": 8}", "{path}: unknown setting 'batch_sise' (did you mean 'batch_size'?)"),
])
def test_config_file_errors_name_the_file_and_the_key(content, expected, tmp_path, capsys):
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content)
    rc = main(["finetune", "--config", str(path), "--model", "tiny", "--out", str(tmp_path / "run")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "miniberts finetune: error: " + expected.format(path=path)


def test_config_file_that_is_a_directory(tmp_path, capsys):
    assert main(["pretrain", "--config", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"miniberts pretrain: error: {tmp_path}: is a directory, expected a file"


def test_config_file_values_fill_the_dataclass_and_flags_win(tmp_path):
    import argparse

    from miniberts.cli import add_dataclass_arguments, dataclass_from_args

    path = tmp_path / "settings.json"
    path.write_text('{"batch_size": 8, "lr": 1e-4, "train_files": ["a.txt"]}')
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_dataclass_arguments(parser, PretrainConfig)
    cfg = dataclass_from_args(PretrainConfig, parser.parse_args(["--config", str(path), "--lr", "3e-4"]))
    assert (cfg.batch_size, cfg.lr, cfg.train_files) == (8, 3e-4, ["a.txt"])
