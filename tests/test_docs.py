"""The READMEs' results tables are generated from the committed results files (`make docs`):
a block that differs from its files (a number edited by hand) fails here."""

from __future__ import annotations

import shutil

import pytest

from rnnexp import docs


def test_every_generated_block_equals_what_its_results_files_give():
    blocks = 0
    for readme in docs.readmes():
        _, differed, count = docs.generate(readme)
        blocks += count
        assert not differed, f"{readme}: {differed}: run `make docs` (or `make report` first, if the runs changed)"
    assert blocks >= 8  # the experiments' tables are blocks: this test checks something


def test_a_number_edited_by_hand_in_a_block_fails_the_check(tmp_path, capsys):
    readme = next(
        r for r in docs.readmes() if r.parent.parent.name == "experiments" and "view=results" in r.read_text()
    )
    shutil.copytree(readme.parent / "results", tmp_path / "results")
    copy = tmp_path / "README.md"
    copy.write_text(readme.read_text())
    docs.main(["--check", str(copy)])  # as committed: passes
    assert "| acc 0." in copy.read_text()
    copy.write_text(copy.read_text().replace("| acc 0.", "| acc 0.9", 1))  # one number changed by hand
    with pytest.raises(SystemExit) as exit:
        docs.main(["--check", str(copy)])
    assert exit.value.code == 1 and "view=results" in capsys.readouterr().err
    docs.main([str(copy)])  # make docs restores it
    assert copy.read_text() == readme.read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- rnnexp:results results view=results -->\nhand-typed 0.93\n", "a block without its end marker"),
        ("<!-- rnnexp:result results view=results -->\n<!-- rnnexp:end -->\n", "a marker that does not parse"),
        (
            "<!-- rnnexp:results results view=results -->\n<!-- rnnexp:results results view=comparisons -->\n"
            "<!-- rnnexp:end -->\n",
            "a start marker inside an open block",
        ),
        ("<!-- rnnexp:results /etc view=results -->\n<!-- rnnexp:end -->\n", "a results folder beside the README"),
    ],
)
def test_a_malformed_block_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    (readme := tmp_path / "README.md").write_text(
        "# x\n```\n<!-- rnnexp:end -->  (an example, in a fence)\n```\n" + text
    )
    with pytest.raises(SystemExit) as exit:
        docs.main(["--check", str(readme)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and err.count("\n") == 1, err


def test_a_mean_near_zero_keeps_its_digits_and_a_text_axis_its_values():
    from rnnexp.docs import _column, _mean

    assert [_mean(v) for v in (0.5, 0.0123, 0.000123, 0.0)] == ["0.50", "0.01", "1.2e-04", "0.00"]
    assert _column("T", 100.0) == "T=100" and _column("read", "pixels") == "read=pixels"
