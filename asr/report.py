"""``asr evaluate --report DIR``: one HTML page of the results, for reading in a browser.

``DIR/index.html`` holds the results table (the numbers ``asr evaluate`` prints), a WER bar
chart per test set (``wer.png``) and, for each of our decoders, the utterances it got most
wrong: reference against hypothesis as a word diff, and each one's picture of ``asr plot``
(:func:`asr.plots.clip_figure`). The page is self-contained: its style is inline, it has no
script and no address outside DIR. The folder is replaced as a whole
(:func:`asr.files.write_folder_atomically`), so an interrupted report never replaces a good one.
"""

import difflib
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

from asr.audio import SAMPLE_RATE
from asr.decoding import DecodingOptions
from asr.evaluation import Evaluation, table_cells
from asr.files import write_folder_atomically
from asr.plots import plot_clip, save_figure, wer_figure

WORST = 20  # utterances shown per decoder
STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1250px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
table.results td:nth-child(n+3) { text-align: right; }
del, ins { text-decoration: none; padding: 0 0.15em; border-radius: 3px; }
del.deletion { background: #f8c4c4; text-decoration: line-through; }
ins.insertion { background: #bfe8bf; }
del.substitution { background: #fde2a8; text-decoration: line-through; }
ins.substitution { background: #fde2a8; font-weight: bold; }
section.utterance { border-top: 1px solid #ddd; margin-top: 1.5em; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class Utterance:
    """One scored utterance of one recognizer."""

    test_set: str
    id: str
    ref: str
    hyp: str
    errors: int  # word substitutions, deletions and insertions (word_errors)

    @property
    def wer(self) -> float:
        """Errors per reference word, as evaluate's per-utterance WER (an empty reference:
        infinite with an error, else 0)."""
        words = len(self.ref.split())
        return self.errors / words if words else (math.inf if self.errors else 0.0)


def word_errors(ref: str, hyp: str) -> int:
    """The fewest word substitutions, deletions and insertions turning ``ref`` into ``hyp``
    (Levenshtein distance over words: what WER counts)."""
    h = hyp.split()
    row = list(range(len(h) + 1))  # errors turning the reference so far into h[:j]
    for i, ref_word in enumerate(ref.split(), start=1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(h, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1]


def align_texts(ref: str, hyp: str) -> list[tuple[str, str, str]]:
    """A word alignment of two texts: ``(op, ref word, hyp word)`` in order, op one of equal,
    substitution, deletion (hyp word "") and insertion (ref word "").

    It has the fewest edits (:func:`word_errors`); of the alignments that do, the one whose
    substituted words are spelled most alike, so "nominate" -> "nomin ite" reads as a
    substitution by "nomin" and an insertion of "ite" rather than the other way round.
    """
    r, h = ref.split(), hyp.split()
    # best[i][j]: ((edits, unlikeness), op of the last step) turning r[:i] into h[:j]
    best = [[((0, 0.0), "")] * (len(h) + 1) for _ in range(len(r) + 1)]
    for i in range(len(r) + 1):
        for j in range(len(h) + 1):
            steps = []
            if i and j:
                (edits, unlike), same = best[i - 1][j - 1][0], r[i - 1] == h[j - 1]
                cost = (edits + (not same), unlike + (0.0 if same else _unlikeness(r[i - 1], h[j - 1])))
                steps.append((cost, "equal" if same else "substitution"))
            if i:
                (edits, unlike) = best[i - 1][j][0]
                steps.append(((edits + 1, unlike + 1.0), "deletion"))
            if j:
                (edits, unlike) = best[i][j - 1][0]
                steps.append(((edits + 1, unlike + 1.0), "insertion"))
            if steps:
                best[i][j] = min(steps)
    aligned, i, j = [], len(r), len(h)
    while i or j:
        op = best[i][j][1]
        ref_word = r[i - 1] if op != "insertion" else ""
        hyp_word = h[j - 1] if op != "deletion" else ""
        aligned.append((op, ref_word, hyp_word))
        i, j = i - (op != "insertion"), j - (op != "deletion")
    return aligned[::-1]


def _unlikeness(a: str, b: str) -> float:
    """0 for the same spelling .. 1 for nothing in common."""
    return 1.0 - difflib.SequenceMatcher(None, a, b).ratio()


def worst_utterances(
    rows: list[tuple[str, str, Evaluation]], recognizer: str, n: int = WORST
) -> list[Utterance]:
    """``recognizer``'s ``n`` utterances of highest WER over every test set of ``rows``
    ((test set, recognizer, result)); of equal WER, the one with more errors first."""
    found = [
        Utterance(name, i, ref, hyp, word_errors(ref, hyp))
        for name, rec, result in rows
        if rec == recognizer
        for i, ref, hyp in zip(result.ids, result.refs, result.hyps, strict=True)
    ]
    return sorted(found, key=lambda u: (u.wer, u.errors), reverse=True)[:n]


def diff_html(edits: list[tuple[str, str, str]]) -> str:
    """The alignment as one line: deleted words in <del>, inserted in <ins>, a substitution as
    both (class "substitution")."""
    words = []
    for op, ref, hyp in edits:
        ref, hyp = html.escape(ref), html.escape(hyp)
        if op == "equal":
            words.append(ref)
        elif op == "deletion":
            words.append(f'<del class="deletion">{ref}</del>')
        elif op == "insertion":
            words.append(f'<ins class="insertion">{hyp}</ins>')
        else:
            words.append(f'<del class="substitution">{ref}</del><ins class="substitution">{hyp}</ins>')
    return " ".join(words)


def check_report_folder(folder, output_dir=None) -> None:
    """Refuse a ``--report`` folder that holds anything a report does not (index.html, PNGs),
    or that holds ``output_dir`` (where evaluate writes its hypotheses): replacing it would
    delete the user's files. Checked before evaluating, so the refusal comes before the work."""
    folder = Path(folder)
    if output_dir and Path(output_dir).resolve().is_relative_to(folder.resolve()):
        raise ValueError(
            f"{folder}: --output-dir {output_dir} would be inside the report, which replaces its "
            "folder as a whole: give the report a folder of its own"
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: is a file; --report needs a folder")
    if folder.is_dir():
        foreign = [p.name for p in folder.iterdir() if not (p.is_file() and _is_report_file(p.name))]
        if foreign:
            raise ValueError(
                f"{folder}: holds files that are not part of a report ({', '.join(sorted(foreign)[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}), and the report replaces the folder: "
                "choose a new or empty folder"
            )


def write_report(
    folder,
    rows: list[tuple[str, str, Evaluation]],
    model,
    decoders: dict[str, DecodingOptions],
    cuts: dict,
    title: str = "asr evaluate",
) -> Path:
    """Write the report of ``rows`` ((test set, recognizer, result), as evaluate scored them)
    to ``folder``; returns the path of its index.html.

    Args:
        model: the model evaluated, which draws the pictures.
        decoders: our recognizers' names in ``rows`` -> their decoding options; the others
            (PocketSphinx) are in the table and the chart only.
        cuts: test set name -> its cuts, where the worst utterances' audio is read.
    """
    check_report_folder(folder)

    def write(partial: Path) -> None:
        save_figure(wer_figure(rows), partial / "wer.png")
        sections = [
            _worst_section(partial, model, name, options, worst_utterances(rows, name), cuts)
            for name, options in decoders.items()
        ]
        (partial / "index.html").write_text(_page(title, rows, sections), encoding="utf-8")

    return write_folder_atomically(folder, write) / "index.html"


def _worst_section(folder: Path, model, recognizer: str, options, worst: list[Utterance], cuts) -> str:
    """The HTML of one decoder's worst utterances, drawing their pictures into ``folder``."""
    audio = _read_clips(cuts, worst)
    parts = [
        f"<h2>The {len(worst)} worst utterances of {html.escape(recognizer)}</h2>",
        "<p>Highest WER first (of equal WER, more errors first), over every test set. "
        '<del class="deletion">deleted</del> <ins class="insertion">inserted</ins> '
        '<del class="substitution">substituted</del><ins class="substitution">by</ins>. '
        "Each picture is <code>asr plot</code> of the clip with the same decoder.</p>",
    ]
    prefix = _slug(recognizer.removeprefix("asr "))
    for rank, u in enumerate(worst, start=1):
        picture = f"{prefix}-{rank:02d}-{_slug(u.test_set)}-{_slug(u.id)}.png"
        plot_clip(model, audio[u.test_set, u.id], folder / picture, options, SAMPLE_RATE,
                  title=f"{u.test_set} / {u.id}\nREF: {_shorten(u.ref)}")  # fmt: skip
        wer = f"{100 * u.wer:.0f} %" if math.isfinite(u.wer) else "infinite (empty reference)"
        words = len(u.ref.split())
        label = html.escape(f"{u.test_set} / {u.id}")
        parts.append(
            f'<section class="utterance"><h3>{rank}. {label}: WER {wer}, '
            f"{u.errors} errors in {words} words</h3>\n"
            f"<table><tr><th>REF</th><td>{html.escape(u.ref)}</td></tr>\n"
            f"<tr><th>HYP</th><td>{html.escape(u.hyp)}</td></tr>\n"
            f"<tr><th>diff</th><td>{diff_html(align_texts(u.ref, u.hyp))}</td></tr></table>\n"
            f'<img src="{picture}" alt="{label}: waveform, features, posteriors, words"></section>'
        )
    return "\n".join(parts)


def _read_clips(cuts: dict, utterances: list[Utterance]) -> dict:
    """(test set, cut id) -> mono 16 kHz samples of each utterance, read as evaluate read them."""
    wanted = {(u.test_set, u.id) for u in utterances}
    return {
        (name, cut.id): cut.resample(SAMPLE_RATE).load_audio().mean(axis=0)
        for name in {u.test_set for u in utterances}
        for cut in cuts[name]
        if (name, cut.id) in wanted
    }


def _page(title: str, rows, sections: list[str]) -> str:
    header, *body = table_cells(rows)
    cells = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<table class="results">
<tr>{"".join(f"<th>{html.escape(c)}</th>" for c in header)}</tr>
{cells}
</table>
<img src="wer.png" alt="WER per test set and recognizer">
{"".join(sections)}
</body>
</html>
"""


def _is_report_file(name: str) -> bool:
    return name == "index.html" or name.endswith(".png")


def _slug(text: str) -> str:
    """``text`` as a safe file name part: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "_"


def _shorten(text: str, most: int = 150) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."
