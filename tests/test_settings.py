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
