"""The point of the project: who learns what. Each case trains for real, in a few seconds, on the
project's own configs, and is scored on the held-out test split against the task's chance level."""

from __future__ import annotations

import pytest

from rnnexp import config
from rnnexp.train import build, lightning_trainer

SPLITS = ["task.train_size=2048", "task.val_size=256", "task.test_size=512", "task.batch_size=64"]


@pytest.fixture
def fit(compose_train):
    """fit(*overrides) -> (test metrics, task), trained with the real `trainer` config."""

    def _fit(*overrides: str, epochs: int = 8, sizes: list[str] = SPLITS):
        cfg = compose_train(
            *sizes,
            *overrides,
            f"trainer.max_epochs={epochs}",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        )
        spec = config.check(cfg)
        built = build(cfg, spec)
        task, module = built.task, built.module
        trainer = lightning_trainer(built.cfg, logger=False, enable_checkpointing=False)
        trainer.fit(module, datamodule=task)
        return trainer.test(module, datamodule=task, verbose=False)[0], task

    return _fit


RECALL = ["task=delayed_recall", "task.length=12", "task.distance=3"]


def test_pattern1_recalls_a_symbol_three_steps_back(fit):
    result, task = fit("model=rnn_hidden", *RECALL)
    assert task.chance_level == 1 / 8
    assert result["test/acc"] > 0.9


def test_window_baseline_recalls_only_what_its_window_covers(fit):
    covered, task = fit("model=mlp_window", "model.window=4", *RECALL)  # sees t-3..t
    assert covered["test/acc"] > 0.9
    too_short, _ = fit("model=mlp_window", "model.window=2", *RECALL)  # sees t-1..t only
    assert too_short["test/acc"] < task.chance_level + 0.07


def test_pattern2_learns_parity_because_its_output_summarises_the_past(fit):
    result, _ = fit("model=rnn_output", "task=running_parity", "task.length=12")
    assert result["test/acc"] > 0.95  # running free, on its own outputs
    assert result["test/acc_tf"] > 0.95


def test_pattern2_cannot_recall_past_its_previous_output(fit):
    """Goodfellow et al. 2016, §10.2.1: the output is all pattern 2 sends to the future; at
    distance 2 it holds the wrong symbol, so the model stays at chance, with or without
    teacher forcing."""
    result, task = fit("model=rnn_output", "task=delayed_recall", "task.length=12", "task.distance=2")
    assert result["test/acc"] < task.chance_level + 0.07
    assert result["test/acc_tf"] < task.chance_level + 0.07


def test_pattern3_beats_the_baseline_mse_on_adding(fit):
    result, task = fit("model=rnn_final", "task=adding", "task.length=10", "task.distance=3")
    y = task.test_dataloader().dataset.tensors[1].double().tolist()
    always_one = sum((1 - v) ** 2 for v in y) / len(y)  # the literature's input-blind predictor, on this split
    assert task.chance_level == pytest.approx(always_one, rel=1e-6)
    assert task.chance_level_population == pytest.approx(1 / 6)
    assert task.chance_level != task.chance_level_population  # a split is not the population
    assert result["test/mse"] < task.chance_level / 3


def test_bag_is_at_chance_on_negated_sentiment_while_pattern3_is_not(fit):
    """Both labels are made of the same multiset of words: only order tells them apart."""
    bag, task = fit("model=mlp_bag", "task=negated_sentiment")
    assert abs(bag["test/acc"] - task.chance_level) < 0.07
    recurrent, _ = fit("model=rnn_final", "task=negated_sentiment")
    assert recurrent["test/acc"] > 0.9


def test_gated_pattern3_resolves_the_pronoun_a_bag_cannot(fit):
    bag, task = fit("model=mlp_bag", "task=pronoun_reference")
    assert abs(bag["test/acc"] - task.chance_level) < 0.07
    gru, _ = fit("model=rnn_final", "model.cell=gru", "task=pronoun_reference")
    assert gru["test/acc"] > 0.9


def test_digits_train_end_to_end(fit):
    """Real data: pattern 3 reads an 8x8 digit row by row and names it."""
    result, task = fit("model=rnn_final", "model.cell=gru", "task=digits", epochs=15, sizes=[])
    assert task.chance_level < 0.11
    assert result["test/acc"] > 0.8


def test_text_pipeline_carries_word_order_to_pattern3(fit, tmp_path):
    """Reviews written as a CSV file, tokenised, cached and padded to varying lengths: pattern 3
    reads each to its own end and gets the negation right; the bag cannot."""
    from tests.conftest import write_reviews

    write_reviews(tmp_path / "reviews.csv", n=3000)
    text = [
        "task=text",
        f"task.path={tmp_path / 'reviews.csv'}",
        "task.text_column=review",
        "task.label_column=sentiment",
        f"task.cache_dir={tmp_path / 'cache'}",
        "task.min_frequency=1",
    ]
    recurrent, task = fit("model=rnn_final", *text, sizes=[])
    assert recurrent["test/acc"] > 0.9
    bag, _ = fit("model=mlp_bag", *text, sizes=[])
    assert abs(bag["test/acc"] - task.chance_level) < 0.08
