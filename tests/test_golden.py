"""The exact metrics of short real runs at a fixed seed (tests/golden.py, tests/golden.yaml): a
change that moves a number fails here with a table of old and new values."""

from __future__ import annotations

import pytest
import yaml

from tests import golden
from tests.conftest import run_command


def test_golden_metrics_are_unchanged(tmp_path):
    env = golden.environment()
    expected = golden.recorded(yaml.safe_load(golden.GOLDEN.read_text()), env)
    if expected is None:
        pytest.skip(f"no golden metrics recorded for this environment ({env}): `make golden` adds them")
    assert sorted(expected) == golden.CONFIGS  # every configuration has its numbers
    message = golden.report(expected, golden.measure(tmp_path, run_command))
    assert message is None, message


def test_a_moved_metric_is_a_table_of_old_and_new_values():
    message = golden.report(
        {"rnn_hidden": {"test/acc": 0.5, "val/acc": 0.25}},
        {"rnn_hidden": {"test/acc": 0.5000000000000001, "val/acc": 0.25}},
    )
    lines = message.splitlines()
    assert lines[0] == "1 golden metric(s) moved:"
    assert lines[1].split() == ["config", "metric", "golden", "now"]
    assert lines[2].split() == ["rnn_hidden", "test/acc", "0.5", "0.5000000000000001"]
    assert "the code changed what it computes" in message and "make golden" in message


def test_make_golden_rewrites_this_environments_numbers_and_drops_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(golden, "GOLDEN", tmp_path / "golden.yaml")
    other = {"torch": "2.0.0", "threads": "1", "cpu": "AVX2", "machine": "x86_64", "cpu_model": "x"}
    golden.write({"environments": []}, other, {"a": {"x": 1.0}})
    here = golden.environment()
    # a new machine's numbers, the code unchanged: the others kept
    golden.write(yaml.safe_load(golden.GOLDEN.read_text()), here, {"a": {"x": 2.0}}, keep_others=True)
    kept = yaml.safe_load(golden.GOLDEN.read_text())
    assert golden.recorded(kept, other) == {"a": {"x": 1.0}} and golden.recorded(kept, here) == {"a": {"x": 2.0}}
    # numbers moved on purpose (make golden): the other machines' are stale, dropped (they skip)
    golden.write(kept, here, {"a": {"x": 3.0}})
    rewritten = yaml.safe_load(golden.GOLDEN.read_text())
    assert golden.recorded(rewritten, here) == {"a": {"x": 3.0}} and golden.recorded(rewritten, other) is None
    assert len(rewritten["environments"]) == 1


def test_an_entry_recorded_before_cpu_models_were_kept_serves_a_cpu_without_its_own():
    older = {"torch": "2.0.0", "threads": "1", "cpu": "AVX512", "machine": "x86_64"}
    mine = {**older, "cpu_model": "AuthenticAMD family 26 model 2"}
    entries = {"environments": [{"environment": older, "metrics": {"a": 1}}]}
    assert golden.recorded(entries, {**older, "cpu_model": "GenuineIntel family 6 model 143"}) == {"a": 1}
    entries["environments"].append({"environment": mine, "metrics": {"a": 2}})
    assert golden.recorded(entries, mine) == {"a": 2}  # its own first
    assert golden.recorded(entries, {**mine, "cpu": "AVX2"}) is None
