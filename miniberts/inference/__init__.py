"""Inference: a loaded model (loaded_model.py) and what runs it: the settings of `embed`/`predict` (config.py),
length-sorted batching and pooling (batching.py), prediction (predict.py), ONNX export (export.py), torch's fast paths
(fast_paths.py) and the engines behind `--backend` (backends/)."""
