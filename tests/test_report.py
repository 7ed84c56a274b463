"""asr evaluate --report: word diffs, the worst utterances, a self-contained page replaced whole."""

import html
import json
import random
import re

import pytest
from torchmetrics.functional.text import word_error_rate

from asr.cli import main
from asr.evaluation import Evaluation
from asr.files import write_folder_atomically
from asr.plots import CLIP_SIZE
from asr.report import align_texts, diff_html, word_errors, worst_utterances
from tests.test_plots import PNG_MAGIC, assert_png


def test_word_alignment_counts_the_errors_wer_counts():
    rng = random.Random(1)
    vocabulary = "a b c d e".split()
    for _ in range(200):
        ref = " ".join(rng.choices(vocabulary, k=rng.randint(1, 8)))
        hyp = " ".join(rng.choices(vocabulary, k=rng.randint(0, 8)))
        edits = align_texts(ref, hyp)
        errors = sum(op != "equal" for op, _, _ in edits)
        assert errors == word_errors(ref, hyp)
        assert errors / len(ref.split()) == pytest.approx(float(word_error_rate(hyp, ref)))
        # The alignment spells out both texts.
        assert " ".join(r for _, r, _ in edits if r) == ref and " ".join(h for _, _, h in edits if h) == hyp
    marked = diff_html(align_texts("the cat sat", "the hat sat down"))
    assert marked == (
        'the <del class="substitution">cat</del><ins class="substitution">hat</ins> sat '
        '<ins class="insertion">down</ins>'
    )
    assert '<del class="deletion">sat</del>' in diff_html(align_texts("the cat sat", "the cat"))
    # Of the alignments with the fewest errors, the one pairing words spelled alike.
    assert align_texts("i nominate manoj", "i nomin ite manole") == [
        ("equal", "i", "i"), ("substitution", "nominate", "nomin"), ("insertion", "", "ite"),
        ("substitution", "manoj", "manole"),
    ]  # fmt: skip


def test_worst_utterances_by_wer_then_errors_over_every_test_set():
    rng = random.Random(2)
    refs = [" ".join(rng.choices("a b c".split(), k=rng.randint(1, 6))) for _ in range(40)]
    hyps = [" ".join(rng.choices("a b c".split(), k=rng.randint(0, 6))) for _ in range(40)]
    test = Evaluation(ids=[f"t{i}" for i in range(20)], refs=refs[:20], hyps=hyps[:20])
    dev = Evaluation(ids=[f"d{i}" for i in range(20)], refs=refs[20:], hyps=hyps[20:])
    other = Evaluation(ids=[f"o{i}" for i in range(20)], refs=refs[:20], hyps=["x y z x y z x"] * 20)
    rows = [("test", "asr greedy", test), ("test", "other", other), ("dev", "asr greedy", dev)]
    worst = worst_utterances(rows, "asr greedy", 10)
    assert len(worst) == 10 and all(u.id[0] == {"test": "t", "dev": "d"}[u.test_set] for u in worst)
    keys = [wer_and_errors(u.ref, u.hyp) for u in worst]
    assert keys == sorted(keys, reverse=True)
    shown = {u.id for u in worst}
    scored = [
        *zip(test.ids, test.refs, test.hyps, strict=True),
        *zip(dev.ids, dev.refs, dev.hyps, strict=True),
    ]
    assert all(wer_and_errors(r, h) <= keys[-1] for i, r, h in scored if i not in shown)


def wer_and_errors(ref: str, hyp: str) -> tuple[float, int]:
    wer = float(word_error_rate(hyp, ref))
    return wer, round(wer * len(ref.split()))


def test_evaluate_report_is_a_self_contained_page(untrained_model_file, corpus, tmp_path, capsys):
    report, hyps = tmp_path / "report", tmp_path / "hyps"
    args = ["evaluate", corpus["test"], "--model", untrained_model_file, "--decoder", "greedy"]
    assert main([*args, "--output-dir", str(hyps), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    page = (report / "index.html").read_text()
    assert not re.search(r"https?://", page) and "<script" not in page and "<link" not in page
    # The table holds the numbers evaluate printed.
    for line in printed.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" in page
    # Every utterance (4 < 20) is among the worst, in order of WER then errors, with its picture.
    scored = [json.loads(line) for line in (hyps / "cuts_test.greedy.hyps.jsonl").read_text().splitlines()]
    positions = {u["id"]: page.find(f"/ {u['id']}:") for u in scored}
    assert all(p > 0 for p in positions.values())
    for u in scored:
        assert html.escape(u["ref"]) in page
    ordered = sorted(scored, key=lambda u: positions[u["id"]])
    keys = [wer_and_errors(u["ref"], u["hyp"]) for u in ordered]
    assert keys == sorted(keys, reverse=True)
    pictures = re.findall(r'<img src="([^"]+)"', page)
    assert len(pictures) == 1 + len(scored) and len(set(pictures)) == len(pictures)
    for name in pictures:
        assert "/" not in name and (report / name).read_bytes()[:8] == PNG_MAGIC
    assert_png(report / pictures[1], CLIP_SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyps", "report"]  # no partial folder left


def test_report_never_replaces_a_folder_of_other_files(untrained_model_file, corpus, tmp_path, capsys):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    args = ["evaluate", corpus["test"], "--model", untrained_model_file, "--output-dir", str(tmp_path)]
    assert main([*args, "--report", str(mine)]) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and err.count("\n") == 1
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob("*.hyps.jsonl"))  # refused before evaluating
    # Nor a report that would hold (and so delete) the hypotheses evaluate writes.
    report = tmp_path / "report"
    assert main([*args, "--report", str(report), "--output-dir", str(report / "hyps")]) == 1
    assert "--output-dir" in capsys.readouterr().err and not report.exists()


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "report"
    write_folder_atomically(folder, lambda d: (d / "index.html").write_text("first"))

    def broken(d):
        (d / "index.html").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_folder_atomically(folder, broken)
    assert (folder / "index.html").read_text() == "first"
    write_folder_atomically(folder, lambda d: (d / "a.png").write_bytes(PNG_MAGIC))
    assert [p.name for p in folder.iterdir()] == ["a.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
