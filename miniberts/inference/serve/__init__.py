"""`miniberts serve`: a loaded model behind HTTP, with Text Embeddings Inference's routes and dynamic batching.

config.py (the settings), batcher.py (the queue and the one model thread), forwards.py (how a pass is cut into
forwards), bodies.py (request bodies -> inputs),
metrics.py (Prometheus), app.py (the Starlette routes), run.py (uvicorn, graceful drain). The routes and their JSON
shapes follow huggingface/text-embeddings-inference (router/src/http/types.rs) so a TEI client works unchanged.
"""
