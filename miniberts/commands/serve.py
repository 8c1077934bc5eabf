"""`miniberts serve MODEL [--host 127.0.0.1] [--port 8080] [--max-batch-tokens 16384] ...`: the model behind HTTP
with text-embeddings-inference's routes and dynamic batching (miniberts/inference/serve, docs/serving.md)."""

from ..cli import add_dataclass_arguments, dataclass_from_args
from ..errors import MinibertsError
from ..inference.serve.config import ServeConfig

HELP = "Serve a model over HTTP (text-embeddings-inference's API: /embed, /predict, /v1/embeddings, ...), batched"


def add_arguments(parser):
    parser.add_argument("model", help="a model directory (Hugging Face, Google TF or sentence-transformers layout, "
                                      "or a fine-tuned classifier) or a preset name")
    add_dataclass_arguments(parser, ServeConfig)


def run(args):
    settings = dataclass_from_args(ServeConfig, args)  # checked before the model is read
    try:  # the `serve` extra: uvicorn, starlette, prometheus-client
        from ..inference.serve.run import serve
    except ImportError as e:
        raise MinibertsError(f"serve needs {e.name}, which is not installed: pip install 'miniberts[serve]'") from None
    serve(settings, args.model)
