"""The exact metrics of short real runs at a fixed seed (tests/golden.py, tests/golden.yaml): a
change that moves a number fails here with a table of old and new values."""

from __future__ import annotations

import yaml

from tests import golden


def test_golden_metrics_are_unchanged(tmp_path):
    expected = yaml.safe_load(golden.GOLDEN.read_text())
    assert sorted(expected["metrics"]) == golden.CONFIGS  # every configuration has its numbers
    message = golden.report(expected, golden.measure(tmp_path))
    assert message is None, message


def test_a_moved_metric_is_a_table_of_old_and_new_values():
    expected = {"environment": golden.environment(), "metrics": {"rnn_hidden": {"test/acc": 0.5, "val/acc": 0.25}}}
    message = golden.report(expected, {"rnn_hidden": {"test/acc": 0.5000000000000001, "val/acc": 0.25}})
    lines = message.splitlines()
    assert lines[0] == "1 golden metric(s) moved:"
    assert lines[1].split() == ["config", "metric", "golden", "now"]
    assert lines[2].split() == ["rnn_hidden", "test/acc", "0.5", "0.5000000000000001"]
    assert "the code changed what it computes" in message and "make golden" in message
    moved = golden.report({**expected, "environment": {**expected["environment"], "torch": "2.0.0"}},
                          {"rnn_hidden": {"test/acc": 0.4, "val/acc": 0.25}})
    assert "torch 2.0.0 -> " in moved and "expected to move numbers" in moved
