"""Write and check the 11 prediction files of a GLUE test-server submission.

The server (gluebenchmark.com/submit) takes a zip of one TSV per test set, named as in
SUBMISSION_FILES (the names NYU's jiant writes in `jiant/scripts/benchmarks/benchmarks.py`,
`GlueBenchmark.BENCHMARK_SUBMISSION_FILENAMES`), each with the header `index<TAB>prediction` and one
row per test example. Predictions are label names as GLUE spells them (0/1 for CoLA, SST-2, MRPC,
QQP, WNLI; strings for MNLI, AX, QNLI, RTE) and STS-B scores, which the server rejects outside
[0, 5], so they are clipped. A submission missing a file or a test row is refused by the server after
the upload; we check all of it before writing anything. `submission.zip` holds the 11 files at its root.
"""

import io
import math
import zipfile
from pathlib import Path

from miniberts.data.tasks import TaskSpec, get_task, read_glue_split
from miniberts.errors import DataError
from miniberts.fileio import atomic_write_bytes, atomic_write_text

# submission file stem -> (task, test split). AX is predicted by the MNLI model.
SUBMISSION_FILES: dict[str, tuple[str, str]] = {
    "CoLA": ("CoLA", "test"),
    "SST-2": ("SST-2", "test"),
    "MRPC": ("MRPC", "test"),
    "STS-B": ("STS-B", "test"),
    "QQP": ("QQP", "test"),
    "MNLI-m": ("MNLI", "test_matched"),
    "MNLI-mm": ("MNLI", "test_mismatched"),
    "QNLI": ("QNLI", "test"),
    "RTE": ("RTE", "test"),
    "WNLI": ("WNLI", "test"),
    "AX": ("AX", "test"),
}
HEADER = ("index", "prediction")
STSB_RANGE = (0.0, 5.0)


def _format_prediction(spec: TaskSpec, value, where: str) -> str:
    if spec.is_regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: prediction {value!r} is not a number") from None
        if not math.isfinite(score):
            raise DataError(f"{where}: prediction {value!r} is not a finite number")
        return f"{min(max(score, STSB_RANGE[0]), STSB_RANGE[1]):.3f}"
    text = str(value)
    if isinstance(value, bool) or text not in spec.labels:
        raise DataError(f"{where}: prediction {value!r} is not a label of {spec.name} ({', '.join(spec.labels)})")
    return text


def _check_coverage(name: str, indices: list[str], expected: list[str], test_file: Path) -> None:
    seen = set()
    for index in indices:
        if index in seen:
            raise DataError(f"{name}.tsv: index {index} is predicted more than once")
        seen.add(index)
    wanted = set(expected)
    extra = [i for i in indices if i not in wanted]
    if extra:
        raise DataError(f"{name}.tsv: index {extra[0]} is not in {test_file} ({len(extra)} such rows)")
    absent = [i for i in expected if i not in seen]
    if absent:
        raise DataError(f"{name}.tsv: no prediction for {len(absent)} of the {len(expected)} rows of {test_file} "
                        f"(first missing index: {absent[0]})")


def _test_file(glue_dir: Path, spec: TaskSpec, split: str) -> Path:
    return glue_dir / spec.directory / spec.splits[split]


def _check_names(names, where: str) -> None:
    missing = [n for n in SUBMISSION_FILES if n not in names]
    unknown = [n for n in names if n not in SUBMISSION_FILES]
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(unknown)}"] if unknown else []
        raise DataError(f"{where}: {'; '.join(parts)}; GLUE expects {', '.join(SUBMISSION_FILES)}")


def write_glue_submission(out_dir: "str | Path", predictions: dict[str, list[tuple]],
                          glue_dir: "str | Path") -> list[Path]:
    """Write `<out_dir>/<name>.tsv` for every name in SUBMISSION_FILES, and `<out_dir>/submission.zip` holding
    them (the file to upload). Returns the paths of the TSVs.

    `predictions[name]` is a list of (test index, prediction) pairs; the indices are those of the
    test file in `glue_dir` (its `index` column, `id` for QQP) and must cover it exactly once.
    Everything is validated before the first file is written; rows are written in test-file order.
    """
    out_dir, glue_dir = Path(out_dir), Path(glue_dir)
    _check_names(list(predictions), "predictions")
    files = {}
    for name, (task, split) in SUBMISSION_FILES.items():
        spec = get_task(task)
        test_file = _test_file(glue_dir, spec, split)
        expected = [ex.index for ex in read_glue_split(glue_dir, spec, split)]
        _check_coverage(name, [str(index) for index, _ in predictions[name]], expected, test_file)
        rows = {str(index): _format_prediction(spec, value, f"{name}.tsv index {index}")
                for index, value in predictions[name]}
        files[name] = "".join("\t".join(r) + "\n" for r in [HEADER, *((i, rows[i]) for i in expected)])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        paths.append(out_dir / f"{name}.tsv")
        atomic_write_text(paths[-1], text)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(f"{name}.tsv", text)
    atomic_write_bytes(out_dir / "submission.zip", archive.getvalue())
    return paths


def check_glue_submission(sub_dir: "str | Path", glue_dir: "str | Path") -> dict[str, int]:
    """Check a submission folder against the GLUE test files: file names, header, one row per test
    index, label vocabularies, STS-B range. Returns the number of rows per file."""
    sub_dir, glue_dir = Path(sub_dir), Path(glue_dir)
    if not sub_dir.is_dir():
        raise DataError(f"{sub_dir}: submission folder not found")
    _check_names([p.stem for p in sub_dir.glob("*.tsv")], str(sub_dir))
    counts = {}
    for name, (task, split) in SUBMISSION_FILES.items():
        spec = get_task(task)
        path = sub_dir / f"{name}.tsv"
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or tuple(lines[0].split("\t")) != HEADER:
            found = repr(lines[0]) if lines else "an empty file"
            raise DataError(f"{path}:1: header should be 'index<TAB>prediction', found {found}")
        indices = []
        for line_no, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(f"{path}:{line_no}: expected 2 tab-separated fields, found {len(fields)}")
            _format_prediction(spec, fields[1], f"{path}:{line_no}")
            if spec.is_regression and not STSB_RANGE[0] <= float(fields[1]) <= STSB_RANGE[1]:
                raise DataError(f"{path}:{line_no}: STS-B score {fields[1]} is outside [0, 5]")
            indices.append(fields[0])
        expected = [ex.index for ex in read_glue_split(glue_dir, spec, split)]
        _check_coverage(name, indices, expected, _test_file(glue_dir, spec, split))
        counts[name] = len(indices)
    return counts
