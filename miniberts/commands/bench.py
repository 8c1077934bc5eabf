"""`miniberts bench [--quick] [--models tiny,small] [--out docs/benchmarks.md]`: miniberts vs transformers vs ONNX Runtime."""

HELP = "Benchmark inference, pre-training and fine-tuning speed against transformers and ONNX Runtime on this machine"


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="Tiny and Small, few repeats (a few minutes)")
    parser.add_argument("--models", default=None,
                        help="comma-separated sizes or presets (default: tiny,mini,small,medium,base; --quick: tiny,small)")
    parser.add_argument("--out", default="docs/benchmarks.md", help="Markdown report; .json and .png are written beside it")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default: 5, --quick: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and onnxruntime alike (default: their own, one per core)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler section")


def run(args):
    from ..bench import BenchConfig, run_bench  # imports transformers/onnxruntime only when benchmarking

    models = args.models.split(",") if args.models else None
    run_bench(BenchConfig.make(quick=args.quick, models=models, repeats=args.repeats, profile=args.profile,
                              threads=args.threads), args.out)
