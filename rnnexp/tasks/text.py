"""Real text: character-level language modelling over any UTF-8 file, and text classification
over Hugging Face datasets (a hub name, or local CSV/JSON/Parquet files) tokenised with Hugging
Face tokenizers. These replace torchtext, which is retired and loads only against torch 2.3.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.utils.data import TensorDataset

from rnnexp.config import TEXT_SUFFIXES, ConfigError
from rnnexp.tasks.base import SEQUENCE, STEP, CrossEntropy, DataSource, Task, TaskIO, split_indices

CACHE_VERSION = 1  # bump when the cached format or the tokenisation changes
PAD, UNK = "[PAD]", "[UNK]"  # ids 0 and 1


class BitsPerCharacter(CrossEntropy):
    """Mean cross-entropy in bits (per predicted character)."""

    def compute(self) -> torch.Tensor:
        return super().compute() / math.log(2)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class CharLM(Task):
    """Predict the next character at every step of fixed-length windows of a UTF-8 text file: a
    real per-step task where patterns 1 and 2 and the window baseline compete.

    The file is cut into non-overlapping windows of `length` characters (inputs, and the same
    shifted by one as targets), which are assigned to train/val/test by the seed. The alphabet
    is every character in the file. Scored in bits per character (`bpc`, lower is better).

    Chance level: the bits per character of the best input-blind predictor, the character
    frequencies of the training split (add-one smoothed), on the test split.

    x: (N, length) character ids; y: (N, length) the next characters.
    """

    name = "char_lm"
    metric_name = "bpc"
    higher_is_better = False

    def __init__(
        self,
        *,
        path: str,
        length: int,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        eval_batch_size: int,
        seed: int = 0,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        self.path, self.length, self.fractions = path, length, (val_fraction, test_fraction)

    def make_splits(self) -> dict[str, TensorDataset]:
        raw = Path(self.path).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError("task.path", self.path, f"a UTF-8 text file ({err.reason} at byte {err.start})") from None
        L = self.length
        windows = (len(text) - 1) // L
        if windows < 3:
            raise ConfigError(
                "task.path",
                self.path,
                f"a text of at least {3 * L + 1} characters for task.length={L} (it has {len(text)})",
            )
        self.alphabet = sorted(set(text))
        code = {c: i for i, c in enumerate(self.alphabet)}
        ids = torch.tensor([code[c] for c in text], dtype=torch.long)
        starts = torch.arange(windows) * L
        steps = starts[:, None] + torch.arange(L)  # (windows, L)
        x, y = ids[steps], ids[steps + 1]
        self.io = TaskIO(vocab_size=len(self.alphabet), n_features=1, n_classes=len(self.alphabet), output=STEP)
        self.data_source = DataSource(Path(self.path).name, str(Path(self.path).resolve()), _digest(raw), windows)
        index = split_indices(windows, *self.fractions, seed=self.seed)
        counts = torch.bincount(y[index["train"]].reshape(-1), minlength=len(self.alphabet)) + 1.0
        unigram = counts / counts.sum()
        self.chance_level = float(-torch.log2(unigram[y[index["test"]]]).mean())
        return {split: TensorDataset(x[i], y[i]) for split, i in index.items()}

    def metric(self):
        return BitsPerCharacter()


class TextClassification(Task):
    """Classify whole texts (sentiment, topic, ...): one output per sequence.

    Data come through Hugging Face `datasets`: a hub name (`dataset`, e.g. imdb, sst2, ag_news;
    needs the network or a cached copy) or a local file (`path`: .csv, .tsv, .json, .jsonl,
    .parquet) with a text and a label column. A dataset's own test split is kept; the rest is
    split into train/val/test by the seed. Labels may be integers or strings.

    A tokenizer (Hugging Face `tokenizers`: word-level, or BPE subwords) is trained on the
    training split only, with `vocab_size`, `min_frequency`, [PAD] (id 0) and [UNK] tokens; texts
    are lowercased and cut at `max_length` tokens. Sequences are padded with [PAD]; their true
    lengths travel with each batch, so models with one output per sequence read each sequence
    at its own last token. The tokenised splits are cached in `cache_dir`, keyed by the data's
    content and every setting, so a sweep tokenises once.

    Chance level: the test accuracy of always predicting the most common training label.

    x: (N, T) token ids, padded; y: (N,) labels; lengths: (N,).
    """

    name = "text"

    def __init__(
        self,
        *,
        dataset: str | None,
        path: str | None,
        text_column: str,
        label_column: str,
        tokenizer: str,
        vocab_size: int,
        min_frequency: int,
        max_length: int,
        cache_dir: str,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        eval_batch_size: int,
        where: str | None,
        seed: int = 0,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        self.dataset, self.path, self.where = dataset, path, where
        self.text_column, self.label_column = text_column, label_column
        self.settings = dict(
            tokenizer=str(getattr(tokenizer, "value", tokenizer)),
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            max_length=max_length,
            fractions=[val_fraction, test_fraction],
            seed=seed,
            columns=[text_column, label_column],
            version=CACHE_VERSION,
            **({"where": where} if where is not None else {}),
        )  # old caches keep their keys
        self.cache_dir = Path(cache_dir)

    # --- loading ------------------------------------------------------------------------------

    def _load(self):
        """The raw DatasetDict (only the rows `where` keeps) and a digest of its whole content."""
        raw, digest = _load_file(self.path) if self.path is not None else _load_hub(self.dataset)
        if self.where is None:
            return raw, digest
        column, value = self.where.split(":", 1)
        for part in raw.values():
            if column not in part.column_names:
                raise ConfigError(
                    "task.where",
                    self.where,
                    "COLUMN:VALUE with COLUMN a column of the dataset: " + ", ".join(part.column_names),
                )
        kept = raw.filter(lambda batch: [str(v) == value for v in batch[column]], batched=True)
        if not sum(len(part) for part in kept.values()):
            found = sorted({str(v) for part in raw.values() for v in part.unique(column)})[:20]
            raise ConfigError("task.where", self.where, f"a value that column {column} has: " + ", ".join(found))
        return kept, digest

    def make_splits(self) -> dict[str, TensorDataset]:
        raw, digest = self._load()
        key = _digest(json.dumps({"data": digest, **self.settings}, sort_keys=True).encode())
        cache = self.cache_dir / f"text-{key}.pt"
        if cache.exists():
            stored = torch.load(cache, weights_only=True)
        else:
            stored = self._tokenise(raw)
            _save_atomically(stored, cache)
        rows = sum(len(part) for part in raw.values())
        if self.path is not None:
            name = Path(self.path).name + (f" where {self.where}" if self.where else "")
            self.data_source = DataSource(name, str(Path(self.path).resolve()), digest, rows)
        else:
            self.data_source = DataSource(self.dataset, f"hf://datasets/{self.dataset}", digest, rows)
        self.vocabulary_size, self.classes = stored["vocab_size"], stored["classes"]
        self.io = TaskIO(vocab_size=self.vocabulary_size, n_features=1, n_classes=len(self.classes), output=SEQUENCE)
        train_y, test_y = stored["train"]["y"], stored["test"]["y"]
        self.chance_level = float((test_y == torch.bincount(train_y).argmax()).float().mean())
        return {
            split: TensorDataset(part["x"], part["y"], part["lengths"])
            for split, part in stored.items()
            if split in ("train", "val", "test")
        }

    def _columns(self, part) -> tuple[list[str], list]:
        for key, column in (("task.text_column", self.text_column), ("task.label_column", self.label_column)):
            if column not in part.column_names:
                raise ConfigError(key, column, "a column of the dataset: " + ", ".join(part.column_names))
        return [str(t) for t in part[self.text_column]], list(part[self.label_column])

    def _tokenise(self, raw) -> dict:
        # the dataset's own test split is kept; train (and validation) are split by the seed. Other
        # splits are left out: imdb's "unsupervised" split, say, has no labels (-1).
        parts = [raw[name] for name in ("train", "validation") if name in raw]
        texts, labels = [], []
        for part in parts:
            t, lab = self._columns(part)
            texts += t
            labels += lab
        if not texts:
            raise ConfigError(
                "task.path" if self.path else "task.dataset",
                self.path or self.dataset,
                "a dataset with at least one example",
            )
        self._check_labels(labels + (self._columns(raw["test"])[1] if "test" in raw else []))
        val_fraction, test_fraction = self.settings["fractions"]
        if (
            self.path is not None
            and self.path.lower().endswith((".csv", ".tsv"))
            and len(texts) < 100
            and (problem := _csv_problem(self.path))
        ):  # few rows: a broken file, rather than a small one?
            raise ConfigError("task.path", self.path, f"a well-formed {Path(self.path).suffix[1:]} file ({problem})")
        if "test" in raw:
            test_texts, test_labels = self._columns(raw["test"])
            index = split_indices(len(texts), val_fraction, 0.0, self.seed)
            index = {"train": index["train"].tolist(), "val": index["val"].tolist()}
        else:
            index = {
                k: v.tolist() for k, v in split_indices(len(texts), val_fraction, test_fraction, self.seed).items()
            }
            test_texts, test_labels = [texts[i] for i in index["test"]], [labels[i] for i in index["test"]]
        classes = sorted({str(v) for v in labels + test_labels}, key=_label_order)
        class_id = {c: i for i, c in enumerate(classes)}
        tokenizer = self._train_tokenizer([texts[i] for i in index["train"]])
        stored: dict = {"classes": classes, "vocab_size": tokenizer.get_vocab_size(), "tokenizer": tokenizer.to_str()}
        for split, (split_texts, split_labels) in {
            "train": ([texts[i] for i in index["train"]], [labels[i] for i in index["train"]]),
            "val": ([texts[i] for i in index["val"]], [labels[i] for i in index["val"]]),
            "test": (test_texts, test_labels),
        }.items():
            encodings = tokenizer.encode_batch(split_texts)
            stored[split] = {
                "x": torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(encodings), -1),
                "y": torch.tensor([class_id[str(v)] for v in split_labels], dtype=torch.long),
                # an empty text is read as one [PAD]: every sequence has a last step
                "lengths": torch.tensor([max(1, sum(e.attention_mask)) for e in encodings], dtype=torch.long),
            }
        return stored

    def _check_labels(self, labels: list) -> None:
        """A classification needs labels, at least two classes, and more than one example of a
        class on average: else it trains on nothing to learn (one class scores accuracy 1.0,
        a class per row 0.0), and finishes as if it had."""
        key, where = ("task.path", self.path) if self.path else ("task.dataset", self.dataset)
        missing = sum(v is None or v != v or (isinstance(v, str) and not v.strip()) for v in labels)
        if missing:
            raise ConfigError(
                key,
                where,
                f"a label in every row of column {self.label_column}; {missing} of {len(labels)} rows have none",
            )
        classes = {str(v) for v in labels}
        if len(classes) < 2 or len(classes) > len(labels) / 2:
            shown = ", ".join(sorted(classes, key=_label_order)[:3]) + (", ..." if len(classes) > 3 else "")
            raise ConfigError(
                key,
                where,
                f"a dataset with at least two classes and more than one example per class "
                f"on average in column {self.label_column}; it has {len(classes)} class(es) in "
                f"{len(labels)} rows ({shown})",
            )

    def _train_tokenizer(self, texts: list[str]):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        s = self.settings
        special = dict(
            vocab_size=s["vocab_size"], min_frequency=s["min_frequency"], special_tokens=[PAD, UNK], show_progress=False
        )
        if s["tokenizer"] == "bpe":
            tokenizer, trainer = Tokenizer(models.BPE(unk_token=UNK)), trainers.BpeTrainer(**special)
        else:
            tokenizer, trainer = Tokenizer(models.WordLevel(unk_token=UNK)), trainers.WordLevelTrainer(**special)
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.train_from_iterator(texts, trainer=trainer)
        tokenizer.enable_truncation(s["max_length"])
        tokenizer.enable_padding(pad_id=0, pad_token=PAD)
        return tokenizer


def _label_order(label: str):
    """Integer labels in numeric order, others alphabetically."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _save_atomically(stored: dict, path: Path) -> None:
    """Write to a temporary file, then rename: concurrent runs never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(stored, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_file(path: str):
    import datasets

    suffix = Path(path).suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ConfigError("task.path", path, "a file ending in " + ", ".join(TEXT_SUFFIXES))
    builder, options = {
        ".csv": ("csv", {}),
        ".tsv": ("csv", {"delimiter": "\t"}),
        ".json": ("json", {}),
        ".jsonl": ("json", {}),
        ".parquet": ("parquet", {}),
    }[suffix]
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its parse errors: said once, below
    try:
        raw = datasets.load_dataset(builder, data_files=path, **options)
    except Exception as err:  # datasets raises many kinds for an unreadable file, the parser's error inside
        while err.__cause__ is not None or err.__context__ is not None:
            err = err.__cause__ or err.__context__
        raise ConfigError(
            "task.path",
            path,
            f"a readable {suffix[1:]} file ({type(err).__name__}: {' '.join(str(err).split())[:200]})",
        ) from None
    return raw, _digest(Path(path).read_bytes())


def _csv_problem(path: str) -> str | None:
    """Where a CSV or TSV file breaks the format (a quote left open swallows the rest of the file
    into one field, which pandas reads without a word), read strictly; None if nowhere."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",", strict=True)
        try:
            width = None
            for row in reader:
                width = width or len(row)
                if len(row) != width:
                    return f"line {reader.line_num} has {len(row)} fields, the header {width}"
        except csv.Error as err:
            return f"line {reader.line_num}: {err}"
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(name: str):
    # Without the network, load only from the local cache, at once (the default retries for
    # about half a minute). The variables are read when `datasets` is first imported; where it
    # was imported already, its settings are set too.
    offline = not _hub_reachable()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets
    import huggingface_hub.constants

    if offline:
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
        huggingface_hub.constants.HF_HUB_OFFLINE = True

    datasets.disable_progress_bars()
    try:
        raw = datasets.load_dataset(name)
    except Exception as err:
        raise ConfigError(
            "task.dataset",
            name,
            "a dataset on the Hugging Face hub, reachable or cached "
            f"({type(err).__name__}); without the network give local files instead: "
            "task.path=FILE (.csv, .tsv, .json, .jsonl or .parquet with columns "
            "task.text_column and task.label_column)",
        ) from None
    digest = _digest("".join(part._fingerprint for part in raw.values()).encode())
    return raw, digest
