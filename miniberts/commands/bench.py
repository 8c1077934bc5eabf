"""`miniberts bench [--quick] [--models tiny,small,minilm] [--engines-only] [--out docs/benchmarks.md]`: miniberts
against transformers, ONNX Runtime, OpenVINO and CTranslate2 (each engine optional; missing ones are listed)."""

HELP = ("Benchmark inference against transformers, ONNX Runtime, OpenVINO and CTranslate2, and pre-training and "
        "fine-tuning speed, on this machine")


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="Tiny only, few repeats: every installed engine in a few minutes")
    parser.add_argument("--models", default=None,
                        help="comma-separated sizes or presets; 'minilm' for the real checkpoint; a model directory or Hub "
                             "id (org/name[@revision], released:tiny) for real weights (engine section only) "
                             "(default: tiny,mini,small,medium,base,minilm; --quick: tiny)")
    parser.add_argument("--engines-only", action="store_true",
                        help="only the engine section (skip the training steps, the memory and the tables against transformers and ONNX Runtime)")
    parser.add_argument("--out", default="docs/benchmarks.md", help="Markdown report; .json and .png are written beside it")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default: 5, --quick: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and every engine alike (default: their own, one per core)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler section")


def run(args):
    from ..bench import BenchConfig, run_bench  # imports the engines only when benchmarking

    models = args.models.split(",") if args.models else None
    run_bench(BenchConfig.make(quick=args.quick, models=models, repeats=args.repeats, profile=args.profile,
                              threads=args.threads, engines_only=args.engines_only), args.out)
