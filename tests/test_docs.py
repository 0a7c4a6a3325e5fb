"""The READMEs' results tables are generated from the committed results files (`make docs`):
a block that differs from its files (a number edited by hand) fails here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rnnexp import docs


def test_every_generated_block_equals_what_its_results_files_give():
    blocks = 0
    for readme in docs.readmes():
        _, differed, count = docs.generate(readme)
        blocks += count
        assert not differed, f"{readme}: {differed}: run `make docs` (or `make report` first, if the runs changed)"
    assert blocks >= 8  # the experiments' tables are blocks: this test checks something


METRIC = re.compile(r"\| (?:acc|xent|mse) 0\.")  # a mean test metric in a results table


def test_a_number_edited_by_hand_in_a_block_fails_the_check(tmp_path, capsys):
    readme = next(
        r
        for r in docs.readmes()
        if r.parent.parent.name == "experiments" and "view=results" in r.read_text() and METRIC.search(r.read_text())
    )
    shutil.copytree(readme.parent / "results", tmp_path / "results")
    copy = tmp_path / "README.md"
    copy.write_text(readme.read_text())
    docs.main(["--check", str(copy)])  # as committed: passes
    number = METRIC.search(copy.read_text()).group(0)  # e.g. "| acc 0." or "| xent 0."
    copy.write_text(copy.read_text().replace(number, number + "9", 1))  # one number changed by hand
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


def test_the_console_view_gives_a_runs_summary_with_its_ids_cut_and_refuses_what_holds_none(tmp_path):
    run = "09702a4dce6541ee8b05e6aa0dfe8088"
    (tmp_path / "out.txt").write_text(
        "Epoch 39/39 ━━━━ 64/64\n\nrnn_hidden (pattern 1) on delayed_recall at distance 15, seed 0:\n"
        "  test/acc       0.9171\n"
        f"run {run} FINISHED in experiment 'delayed_recall' (sqlite:///mlflow.db)\n"
        f"open it: `make ui`, then http://127.0.0.1:5000/#/experiments/1/runs/{run}?workflowType=machine_learning\n"
    )
    assert docs.console_view(tmp_path, "out.txt").splitlines() == [
        "```",
        "rnn_hidden (pattern 1) on delayed_recall at distance 15, seed 0:",
        "  test/acc       0.9171",
        "run 0970… FINISHED in experiment 'delayed_recall' (sqlite:///mlflow.db)",
        "open it: `make ui`, then http://127.0.0.1:5000/#/experiments/1/runs/0970…",
        "```",
    ]
    # two runs in one file, the second cut short: the last whole summary; a hex string not a run id kept
    first = (tmp_path / "out.txt").read_text().replace("0.9171", "0.5000")
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    (tmp_path / "two.txt").write_text(first + f"checksum {md5}\nrnn_output (pattern 2) on delayed_recall, seed 1:\n")
    view = docs.console_view(tmp_path, "two.txt")
    assert "0.5000" in view and "pattern 2" not in view and md5 not in view  # the summary only
    (tmp_path / "hex.txt").write_text(first.replace("  test/acc", f"  {md5}\n  test/acc"))
    assert md5 in docs.console_view(tmp_path, "hex.txt")
    (tmp_path / "none.txt").write_text("Epoch 39/39\n")
    with pytest.raises(docs.DocsError, match="no run summary"):
        docs.console_view(tmp_path, "none.txt")
    for name in ("../out.txt", "..", "/etc/passwd", ""):
        with pytest.raises(docs.DocsError, match="a file name in the results folder"):
            docs.console_view(tmp_path, name)
    with pytest.raises(docs.DocsError, match="missing"):
        docs.console_view(tmp_path, "gone.txt")


def test_a_mean_near_zero_keeps_its_digits_and_a_text_axis_its_values():
    from rnnexp.docs import _column, _mean

    assert [_mean(v) for v in (0.5, 0.0123, 0.000123, 0.0)] == ["0.50", "0.01", "1.2e-04", "0.00"]
    assert _column("T", 100.0) == "T=100" and _column("read", "pixels") == "read=pixels"


# The README and the pages it sends readers to: docs/*.md and CONTRIBUTING.md. What they name (links, make
# targets, paths, tests) must exist, so a rename that leaves them stale fails here.
ROOT = docs.ROOT
README = ROOT / "README.md"
GUIDES = [ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = [README, *GUIDES]
README_MAX_LINES = 250
# files a command writes when it runs, named in the docs but not committed
WRITTEN_BY_COMMANDS = {"experiments/throughput/gpu.md"}
# the files docs/extending.md has a reader write (tests/test_extending.py writes them in a copy)
WRITTEN_BY_THE_READER = {"rnnexp/models/convolution.py", "conf/model/causal_conv.yaml"}
FENCE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`]+)`")
REPO_PATH = re.compile(r"(?:experiments|rnnexp|tests|conf|\.ci)/[\w./-]*(?:::\w+)?")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _split(text: str) -> tuple[str, list[str]]:
    """The page's prose with its fenced code blocks taken out, and those blocks."""
    return FENCE.sub("", text), FENCE.findall(text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    prose, _ = _split(page.read_text())
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose, re.MULTILINE)}


def _links(page: Path) -> list[str]:
    prose, _ = _split(page.read_text())
    return LINK.findall(prose)


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", makefile, re.MULTILINE))


def test_the_readme_is_short_and_links_every_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"
    assert GUIDES[1:], "docs/ holds the reference pages"
    linked = {(README.parent / link.split("#")[0]).resolve() for link in _links(README) if "://" not in link}
    missing = [_page_id(page) for page in GUIDES if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_each_link_and_image_of_a_page_resolves(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][\w+.-]*:", link):  # https:, mailto:: not checked here
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{_page_id(page)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_each_make_target_a_page_names_exists(page):
    prose, fences = _split(page.read_text())
    code = [" ".join(span.split()) for span in CODE_SPAN.findall(prose)] + fences
    named = set()
    for snippet in code:
        for after in re.findall(r"(?:^|[\s`(])make ((?:[a-z][\w-]*\s*)+)", snippet, re.MULTILINE):
            named.update(after.split())
    assert named or page.name not in {"README.md", "CONTRIBUTING.md"}, "the pages name make targets"
    unknown = sorted(named - _make_targets())
    assert not unknown, f"{_page_id(page)} names make targets the Makefile lacks: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_each_path_and_test_a_page_names_exists(page):
    prose, _ = _split(page.read_text())
    missing = []
    for span in CODE_SPAN.findall(prose):
        found = REPO_PATH.match(span.split()[0]) if span.split() else None
        if found is None or found.group() != span.split()[0]:
            continue  # not a path, or a pattern with a placeholder: conf/experiment/<name>.yaml
        path, _, test = found.group().partition("::")
        if any(Path(part).stem.isupper() for part in Path(path).parts) or path in WRITTEN_BY_COMMANDS | (
            WRITTEN_BY_THE_READER if page.name == "extending.md" else set()
        ):
            continue  # a placeholder (conf/experiment/EXP/), or a file a command writes
        if not (ROOT / path).exists():
            missing.append(path)
        elif test and not re.search(rf"^\s*(?:async )?def {re.escape(test)}\(", (ROOT / path).read_text(), re.M):
            missing.append(f"{path}::{test}")
    assert not missing, f"{_page_id(page)} names what does not exist: {missing}"


@pytest.mark.parametrize("page", GUIDES, ids=_page_id)
def test_a_guide_s_generated_blocks_if_any_are_up_to_date(page):
    _, differed, _ = docs.generate(page)  # markers outside a code fence are checked as in a README
    assert not differed, f"{page}: {differed}: run `make docs`"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_page_cites_what_users_do_not_have(page):
    assert not re.search(r"(?:\.\./)+shared/", page.read_text()), f"{_page_id(page)} cites ../shared/"
