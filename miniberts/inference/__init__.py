"""Inference: a loaded model (loaded_model.py) and what runs it: the settings of `embed`/`predict` (config.py),
length-sorted batching and pooling (batching.py), prediction (predict.py), ONNX export (export.py), a
sentence-transformers directory (st_export.py), torch's fast paths (fast_paths.py), the engines behind `--backend`
(backends/) and the HTTP server (serve/)."""
