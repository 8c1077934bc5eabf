"""What the commands say names what the user gave: `export --engine X` errors name --engine, `embed --int8` (and
`predict --int8`) reports int8, not the float dtype the model was loaded in."""

import logging

from miniberts.inference import backends
from miniberts.cli import main


def test_export_engine_errors_name_the_engine_flag(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(backends, "missing_module", lambda name: "openvino")
    capsys.readouterr()
    assert main(["export", tiny, "--engine", "openvino", "--out", str(tmp_path / "ov")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miniberts export: error: --engine openvino needs openvino, which is not installed"), err
    assert not (tmp_path / "ov").exists()


def test_embed_int8_reports_int8(tiny, tmp_path, caplog):
    texts = tmp_path / "t.txt"
    texts.write_text("A man is playing a guitar.\nThe stock market fell.\n", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert main(["embed", tiny, str(texts), "--output", str(tmp_path / "v.npy"), "--backend", "torch",
                     "--int8"]) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote "))
    assert line.endswith("2 x 32 (auto, int8 on cpu)"), line
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["embed", tiny, str(texts), "--output", str(tmp_path / "v.npy"), "--backend", "torch",
                     "--dtype", "fp32"]) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote "))
    assert line.endswith("2 x 32 (auto, fp32 on cpu)"), line
