"""The READMEs' results tables are generated from the committed results files (`make docs`):
a block that differs from its files (a number edited by hand) fails here."""

from __future__ import annotations

import shutil

import pytest

from rnnexp import docs


def test_every_generated_block_equals_what_its_results_files_give():
    blocks = 0
    for readme in docs.readmes():
        blocks += len(docs.BLOCK.findall(readme.read_text()))
        _, differed = docs.generate(readme)
        assert not differed, f"{readme}: {differed}: run `make docs` (or `make report` first, if the runs changed)"
    assert blocks >= 8  # the experiments' tables are blocks: this test checks something


def test_a_number_edited_by_hand_in_a_block_fails_the_check(tmp_path, capsys):
    readme = next(r for r in docs.readmes() if r.parent.parent.name == "experiments" and "view=results" in r.read_text())
    shutil.copytree(readme.parent / "results", tmp_path / "results")
    copy = tmp_path / "README.md"
    copy.write_text(readme.read_text())
    docs.main(["--check", str(copy)])  # as committed: passes
    block = docs.BLOCK.search(copy.read_text())
    edited = block["body"].replace("0.", "0.9", 1)  # one number changed by hand
    copy.write_text(copy.read_text().replace(block["body"], edited))
    with pytest.raises(SystemExit) as exit:
        docs.main(["--check", str(copy)])
    assert exit.value.code == 1 and "view=results" in capsys.readouterr().err
    docs.main([str(copy)])  # make docs restores it
    assert copy.read_text() == readme.read_text()
