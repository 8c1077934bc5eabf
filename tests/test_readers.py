"""Bad input files: every reader answers with one line `file:line: what was expected`.

The readers: the tabular reader (data/tabular.py, behind task files, predict inputs and GLUE splits), the task loader
(data/load.py), plain text lines (batching.read_lines) and pre-training text (data/pretraining.py). Property-based tests
feed them random bytes and random CSV/JSONL shapes: only a MinibertsError or a valid result may come back.
"""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniberts.cli import main
from miniberts.data.load import load_task
from miniberts.data.pretraining import check_files, read_lines as read_corpus_lines
from miniberts.data.tabular import read_table
from miniberts.data.tasks import read_user_file
from miniberts.errors import DataError, MinibertsError
from miniberts.inference.batching import read_lines
from miniberts.tokenizer import BUILTIN_VOCAB, WordPieceTokenizer


def message(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        call(*args, **kwargs)
    text = str(e.value)
    assert "\n" not in text, text
    return text


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# --- encodings ------------------------------------------------------------------------------------------------

def test_invalid_utf8_in_a_csv_names_the_line(tmp_path):
    path = write(tmp_path / "t.csv", b"text,label\ngood,pos\nna\xefve,neg\n")
    assert message(read_user_file, path, "text", None, "label").startswith(f"{path}:3: not valid UTF-8")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])  # with BOM, and without
def test_utf16_is_named(tmp_path, encoding):
    path = write(tmp_path / "t.csv", "text,label\ngood,pos\nbad,neg\n".encode(encoding))
    assert message(read_user_file, path, "text", None, "label") == \
        f"{path}: UTF-16 is not supported; save the file as UTF-8"
    txt = write(tmp_path / "t.txt", "one\ntwo\n".encode(encoding))
    assert "UTF-16 is not supported" in message(read_lines, txt)
    assert "UTF-16 is not supported" in message(lambda p: list(read_corpus_lines(p)), txt)


def test_utf8_bom_is_dropped(tmp_path):
    path = write(tmp_path / "t.csv", b"\xef\xbb\xbftext,label\nhello,pos\nbye,neg\n")
    assert [ex.text_a for ex in read_user_file(path, "text", None, "label")] == ["hello", "bye"]
    jl = write(tmp_path / "t.jsonl", b'\xef\xbb\xbf{"text": "hi", "label": 1}\n')
    assert read_user_file(jl, "text", None, "label")[0].label == "1"
    assert read_lines(write(tmp_path / "t.txt", b"\xef\xbb\xbfhello\n")) == ["hello"]


# --- shapes ---------------------------------------------------------------------------------------------------

def test_a_10_mb_field_is_read(tmp_path):
    big = "word " * 2_000_000  # 10 MB in one field: the csv module's default limit is 128 KiB
    path = write(tmp_path / "t.csv", f'text,label\n"{big}",pos\nshort,neg\n')
    examples = read_user_file(path, "text", None, "label")
    assert len(examples[0].text_a) == len(big) and examples[1].text_a == "short"
    tsv = write(tmp_path / "t.tsv", f"text\tlabel\n{big}\tpos\n")
    assert len(read_user_file(tsv, "text", None, "label")[0].text_a) == len(big)


def test_unclosed_quote_is_reported_where_it_opened(tmp_path):
    path = write(tmp_path / "t.csv", 'text,label\ngood,pos\n"bad movie,neg\nfine,pos\nok,neg\n')
    assert message(read_user_file, path, "text", None, "label") == (
        f"{path}:3: unclosed quote: the quoted field opened on this line runs to the end of the file")


def test_quote_spanning_lines_then_ragged_names_the_first_line(tmp_path):
    path = write(tmp_path / "t.csv", 'text,label\n"bad\nmovie",neg,extra\nfine,pos\n')
    err = message(read_user_file, path, "text", None, "label")
    assert err.startswith(f"{path}:2: expected 2 fields, found 3") and "quote" in err


def test_quoted_multiline_field_is_valid_and_line_numbers_stay_physical(tmp_path):
    path = write(tmp_path / "t.csv", 'text,label\n"two\nlines",pos\nbye,maybe\n')
    examples = read_user_file(path, "text", None, "label")
    assert examples[0].text_a == "two\nlines"
    err = message(read_user_file, path, "text", None, "label", labels=("pos",))
    assert err.startswith(f"{path}:4: unknown label 'maybe'")


def test_ragged_row(tmp_path):
    path = write(tmp_path / "t.tsv", "text\tlabel\na\tpos\nb\tneg\textra\n")
    assert message(read_user_file, path, "text", None, "label") == f"{path}:3: expected 2 fields, found 3"


@pytest.mark.parametrize("name", ["t.csv", "t.tsv"])
def test_a_file_of_only_newlines(tmp_path, name):
    path = write(tmp_path / name, "\n\n\r\n\n")
    assert message(read_user_file, path, "text") == f"{path}: empty file (no header, no examples)"


def test_header_only_and_blank_jsonl(tmp_path):
    path = write(tmp_path / "t.csv", "text,label\n\n\n")
    assert message(read_user_file, path, "text") == f"{path}: no examples (a header but no rows)"
    jl = write(tmp_path / "t.jsonl", "\n\n  \n")
    assert message(read_user_file, jl, "text") == f"{jl}: no examples (expected one JSON object per line)"


def test_duplicate_column_names(tmp_path):
    path = write(tmp_path / "t.csv", "text,label,text\na,b,c\n")
    assert message(read_table, path) == f"{path}:1: duplicate column name(s) 'text' in the header"


@pytest.mark.parametrize("value, found", [(3, "a number"), (["a", "b"], "a list"), ({"a": 1}, "an object"),
                                          (True, "true/false")])
def test_non_text_jsonl_values_in_text_columns(tmp_path, value, found):
    path = write(tmp_path / "t.jsonl", json.dumps({"text": "fine", "label": "a"}) + "\n" +
                 json.dumps({"text": value, "label": "b"}) + "\n")
    assert message(read_user_file, path, "text", None, "label") == f"{path}:2: column 'text' must be text, found {found}"


def test_jsonl_list_label_and_non_object_line(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": [1]}\n')
    assert message(read_user_file, path, "text", None, "label") == \
        f"{path}:1: column 'label' must be a label (text or a number), found a list"
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n')
    assert message(read_user_file, path, "text", None, "label") == f"{path}:2: expected a JSON object, found a list"


@pytest.mark.parametrize("suffix", [".gz", ".bz2"])
def test_corrupt_compressed_corpus(tmp_path, suffix):
    import bz2
    import gzip

    data = (gzip.compress if suffix == ".gz" else bz2.compress)(b"hello world\n" * 100)
    damaged = data[:12] + bytes(b ^ 0x5A for b in data[12:40]) + data[40:]  # the header is fine, the stream is not
    path = write(tmp_path / f"corpus.txt{suffix}", damaged)
    assert message(lambda p: list(read_corpus_lines(p)), path).startswith(f"{path}: cannot be read (")


def test_a_directory_is_not_a_file(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    assert message(read_user_file, folder, "text") == f"{folder}: is a directory, expected a file"
    assert message(read_lines, folder) == f"{folder}: is a directory, expected a file"
    assert message(check_files, [str(folder)]) == f"{folder}: is a directory, expected a train file"
    settings_ = SimpleNamespace(task="CoLA", glue_dir=str(write(tmp_path / "glue.zip", b"PK")), train="", dev="",
                                test="", max_train_examples=0, cache_dir="")
    assert message(load_task, settings_) == f"{tmp_path / 'glue.zip'}: is a file, expected the glue_data/ folder " \
                                            "(one subfolder per task)"


# --- NaN regression labels ----------------------------------------------------------------------------------

def task(tmp_path, train_rows, dev_rows=(("x", "y", "0.5"),), **kw):
    header = ("sentence1", "sentence2", "score")
    files = {}
    for split, rows in (("train", train_rows), ("dev", dev_rows)):
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        files[split] = str(tmp_path / f"{split}.csv")
    fields = dict(task="", glue_dir="", test="", text_column="sentence1", text_pair_column="sentence2",
                  label_column="score", task_type="", max_train_examples=0, cache_dir="")
    return SimpleNamespace(**{**fields, **files, **kw})


SCORES = [(f"a{i}", f"b{i}", f"{i * 0.0625:.4f}") for i in range(80)]


@pytest.mark.parametrize("task_type", ["", "regression"])
@pytest.mark.parametrize("bad", ["NaN", "inf", "-Infinity"])
def test_a_nan_score_names_its_line(tmp_path, task_type, bad):
    rows = SCORES[:40] + [("c", "d", bad)] + SCORES[40:]
    settings_ = task(tmp_path, rows, task_type=task_type)
    assert message(load_task, settings_) == f"{settings_.train}:42: score '{bad}' is not a finite number"


def test_scores_are_regression_not_80_classes(tmp_path):
    data = load_task(task(tmp_path, SCORES))
    assert data.regression and data.train[1].label == 0.0625


def test_nan_score_via_the_cli_is_one_line_before_training(tmp_path, capsys, tiny):
    settings_ = task(tmp_path, SCORES + [("c", "d", "nan")])
    rc = main(["finetune", "--model", tiny, "--out", str(tmp_path / "run"), "--train", settings_.train, "--dev",
               settings_.dev, "--text-column", "sentence1", "--text-pair-column", "sentence2", "--label-column",
               "score", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"miniberts finetune: error: {settings_.train}:82: score 'nan' is not a finite number"
    assert not (tmp_path / "run").exists()


# --- predict's inputs use the same reader ---------------------------------------------------------------------

def test_predict_inputs(tmp_path):
    from miniberts.inference.predict import read_inputs

    path = write(tmp_path / "in.csv", b"id,sentence\n1,caf\xe9\n")
    assert message(read_inputs, path).startswith(f"{path}:2: not valid UTF-8")
    path = write(tmp_path / "in.jsonl", '{"text": "a"}\n{"text": 7}\n')
    assert message(read_inputs, path) == f"{path}:2: column 'text' must be text, found a number"
    path = write(tmp_path / "in.csv", "\n\n")
    assert message(read_inputs, path) == f"{path}: empty file (no header, no examples)"
    assert read_inputs(write(tmp_path / "ok.tsv", "sentence\tx\nhi\t1\n")) == (["hi"], None)


# --- property-based: random bytes and shapes give a clean error or a valid result -----------------------------

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".txt", ".gz", ".bz2"]),
       compressed=st.booleans())
def test_random_bytes_into_every_reader(tmp_path, data, suffix, compressed):
    import bz2
    import gzip

    if compressed and suffix in (".gz", ".bz2"):  # a valid container around random bytes, then damaged in the middle
        data = (gzip.compress if suffix == ".gz" else bz2.compress)(data)
        data = data[:12] + bytes(b ^ 0x5A for b in data[12:30]) + data[30:]
    path = write(tmp_path / f"r{suffix}", data)
    readers = {  # reader -> what a valid result satisfies
        read_lines: lambda texts: texts and all(isinstance(t, str) and "\n" not in t for t in texts),
        lambda p: list(read_corpus_lines(p)): lambda lines: all(line == line.strip() for line in lines),
    }
    if suffix != ".txt":
        readers[read_table] = lambda table: all(set(row) == set(table.columns) for _, row in table.rows)
        readers[lambda p: read_user_file(p, "text", None, "label")] = lambda examples: examples and all(
            isinstance(ex.text_a, str) and isinstance(ex.label, str) for ex in examples)
    for reader, valid in readers.items():
        try:
            result = reader(path)
        except MinibertsError as e:
            assert "\n" not in str(e) and str(path) in str(e)
        else:
            assert valid(result)


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FAST
@given(rows=st.lists(st.lists(cell, min_size=0, max_size=4), max_size=6), delimiter=st.sampled_from([",", "\t"]))
def test_random_csv_shapes(tmp_path, rows, delimiter):
    path = tmp_path / ("r.csv" if delimiter == "," else "r.tsv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        if delimiter == ",":
            csv.writer(f).writerows(rows)
        else:
            f.write("".join("\t".join(r) + "\n" for r in rows))
    try:
        table = read_table(path)
    except MinibertsError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert all(set(row) == set(table.columns) for _, row in table.rows)
        assert all(isinstance(line, int) and line >= 2 for line, _ in table.rows)


json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | cell,
                          lambda inner: st.lists(inner, max_size=2) | st.dictionaries(cell, inner, max_size=2),
                          max_leaves=4)


@FAST
@given(records=st.lists(st.dictionaries(st.sampled_from(["text", "label", "other"]), json_value, max_size=3) |
                        json_value, max_size=5))
def test_random_jsonl_shapes(tmp_path, records):
    path = write(tmp_path / "r.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    try:
        examples = read_user_file(path, "text", None, "label")
    except MinibertsError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert all(isinstance(ex.text_a, str) and isinstance(ex.label, str) for ex in examples)


TOKENIZER = WordPieceTokenizer(BUILTIN_VOCAB)


@settings(max_examples=80, deadline=None)
@given(texts=st.lists(st.tuples(st.text(max_size=40), st.text(max_size=40)), min_size=1, max_size=4),
       pairs=st.booleans(), max_length=st.integers(3, 16))
def test_random_text_into_the_tokenizer(texts, pairs, max_length):
    firsts, seconds = [a for a, _ in texts], ([b for _, b in texts] if pairs else None)
    ids, type_ids = TOKENIZER.encode(firsts, seconds, max_length)
    assert len(ids) == len(texts)
    for row, types in zip(ids, type_ids):
        assert len(row) <= max_length and len(types) == len(row)
        assert row[0] == TOKENIZER.cls_id and row[-1] == TOKENIZER.sep_id
        # (a literal "[SEP]" in the text is kept as the special token, as transformers' BertTokenizer does)
        assert row.count(TOKENIZER.sep_id) == (2 if pairs else 1) or any("[SEP]" in a + b for a, b in texts)
        assert all(0 <= i < len(TOKENIZER) for i in row) and set(types) <= {0, 1}


def test_malformed_quoting_and_bare_carriage_returns(tmp_path):
    path = write(tmp_path / "t.csv", 'text,label\n"good"ish,pos\n')
    assert message(read_table, path) == f"{path}:2: malformed CSV quoting (',' expected after '\"')"
    path = write(tmp_path / "t.csv", "text,label\rgood,pos\n")
    assert message(read_table, path).startswith(f"{path}:1: a carriage return (\\r) inside an unquoted field")
    assert read_table(write(tmp_path / "t.csv", "text,label\r\ngood,pos\r\n")).rows == [(2, {"text": "good",
                                                                                              "label": "pos"})]
