"""The counting lessons drawn (`plots.designs`): every box and title comes from the lesson's own counted designs,
the text fits a phone's plot without overlapping, and `cnncompare lesson KEY --plot` writes a page that works
offline."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnncompare import counting, diagram, plots
from cnncompare.cli import main
from cnncompare.plots import designs as drawn

ROOT = Path(__file__).resolve().parents[1]
PHONE, DESKTOP = 310, 1200  # plot widths in px: a 390 px phone's plot (measured in the app), a wide screen
EM = 0.5  # text width per character, in font sizes (Arial and Inter average under it, bold included)


@functools.cache
def _lesson(key: str):
    designs, _ = counting.BY_KEY[key].read()
    return designs, plots.counting_figure(key, [d.to_dict() for d in designs])


def _notes(fig, name: str) -> list:
    return [a for a in fig.layout.annotations if a.name == name]


def _plain(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


def _hover_numbers(fig) -> list[tuple[int, int]]:
    """(weights, multiply-adds) of every convolution box, from its hover text, in drawing order."""
    out = []
    for text in fig.data[0].hovertext:
        m = re.search(r"([\d,]+) weights · ([\d,]+) multiply-adds", text)
        if m:
            out.append((int(m[1].replace(",", "")), int(m[2].replace(",", ""))))
    return out


def test_the_layers_of_each_design_add_up_to_its_counts():
    for key in counting.BY_KEY:
        for d in _lesson(key)[0]:
            assert d.layers and sum(x.params for x in d.layers) == d.params and sum(x.macs for x in d.layers) == d.macs
            assert d.receptive_field == max(x.sees for x in d.layers)  # read from the layers, never typed in


def test_the_reductions_drawing_is_the_modules_branches_with_their_counts():
    designs, fig = _lesson("reductions")
    naive, reduced = designs
    titles = " ".join(_plain(a.text) for a in _notes(fig, "title"))
    for d in designs:
        assert f"{d.params:,} weights" in titles and f"{d.out_channels} channels out" in titles
        assert len({x.branch for x in d.layers}) == 4  # 1×1 | 3×3 | 5×5 | pool
    assert len([s for s in fig.layout.shapes if s.type == "line"]) == 8  # a wire per branch, input to concatenation
    assert [_plain(a.text) for a in _notes(fig, "output")] == ["concat: 416 ch", "concat: 256 ch"]
    labels = [_plain(a.text) for a in _notes(fig, "box")]
    assert len(labels) == len(naive.layers) + len(reduced.layers) == 4 + 7
    assert "3×3, 192→128173 M MACs" in labels and "3×3 max-pool, 192no MACs" in labels  # the naive 3×3, the pool
    assert "1×1, 192→9614 M MACs" in labels and "3×3, 96→12887 M MACs" in labels  # the reduction, then the 3×3
    convs = [(x.params, x.macs) for d in designs for x in d.layers if x.kind == "conv"]
    assert _hover_numbers(fig) == convs
    # each box is filled by its multiply-adds, on one scale: the largest layer fills its box
    boxes = [s for s in fig.layout.shapes if (s.name or "").startswith("box-")]
    fills = {(s.y0, s.x0): s.x1 - s.x0 for s in fig.layout.shapes if s.fillcolor == drawn.COLORS["conv"]}
    most = max(m for _, m in convs)
    widths = [fills.get((b.y0, b.x0), 0) / (b.x1 - b.x0) for b in boxes]
    assert widths == pytest.approx([x.macs / most for d in designs for x in d.layers])


def test_the_stacked_drawing_has_a_box_per_convolution_and_the_receptive_fields():
    designs, fig = _lesson("stacked")
    titles = [_plain(a.text) for a in _notes(fig, "title")]
    assert titles == [f"{d.name}: {d.params:,} weights, sees {d.receptive_field}×{d.receptive_field}" for d in designs]
    labels = [_plain(a.text) for a in _notes(fig, "box")]
    assert labels == [f"{x.kernel}×{x.kernel}, {x.cin}→{x.cout}{x.params:,} weights" for d in designs for x in d.layers]
    assert labels.count("3×3, 256→256589,824 weights") == 5 and len(labels) == 2 + 1 + 3 + 1
    assert _hover_numbers(fig) == [(x.params, x.macs) for d in designs for x in d.layers]
    # the grid: a square per field a layer reaches, 3×3 inside 5×5 inside 7×7, each said in words
    squares = {s.name: s for s in fig.layout.shapes if (s.name or "").startswith("field-")}
    assert sorted(squares) == ["field-3", "field-5", "field-7"]
    sides = {k: squares[k].x1 - squares[k].x0 + 2 for k in squares}  # drawn 1 px inside the grid lines
    assert sides["field-5"] / sides["field-3"] == pytest.approx(5 / 3) and sides["field-7"] == 7 * 12
    said = [_plain(a.text) for a in _notes(fig, "field")]
    assert said == ["3×3: one 3×3 layer", "5×5: two 3×3 layers, or one 5×5", "7×7: three 3×3 layers, or one 7×7"]


def test_the_colours_are_the_diagrams():
    assert drawn.COLORS == {k: diagram.KIND_COLORS[k] for k in drawn.COLORS}


def _text_box(a, width: int) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of an annotation in plot pixels; the y axis counts pixels downwards."""
    lines = _plain(a.text.replace("<br>", "\n")).split("\n")
    w, h = EM * a.font.size * max(len(line) for line in lines), 1.25 * a.font.size * len(lines)
    if a.textangle == -90:
        w, h = h, w
    x = a.x * width + (a.xshift or 0)
    left = {"left": x, "right": x - w}.get(a.xanchor, x - w / 2)
    top = {"top": a.y, "bottom": a.y - h}.get(a.yanchor, a.y - h / 2)
    return left, left + w, top, top + h


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


@pytest.mark.parametrize("key", sorted(counting.BY_KEY))
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_the_text_fits_and_never_overlaps_on_a_phone_or_a_wide_screen(key, width):
    _, fig = _lesson(key)
    plot_h = fig.layout.yaxis.range[0]
    assert fig.layout.height <= 450 and fig.layout.height == plot_h + fig.layout.margin.t + fig.layout.margin.b
    assert fig.layout.title.yanchor == "top" and fig.layout.title.yref == "container"  # in the top margin
    notes = list(fig.layout.annotations)
    assert all(a.font.size >= 11 for a in notes)
    spans = [_text_box(a, width) for a in notes]
    for a, s in zip(notes, spans):
        assert s[0] >= -2 and s[1] <= width + 2 and s[2] >= 0 and s[3] <= plot_h, (a.text, s)
    for i in range(len(notes)):
        for j in range(i):
            assert not _overlap(spans[i], spans[j]), (notes[i].text, notes[j].text)
    boxes = [s for s in fig.layout.shapes if (s.name or "").startswith("box-")]
    for a, s in zip(_notes(fig, "box"), boxes):  # each label inside its own box
        left, right, top, bottom = _text_box(a, width)
        assert s.x0 * width <= left and right <= s.x1 * width and s.y0 <= top + 1 and bottom <= s.y1 + 1, a.text
    for a, s in zip(notes, spans):  # titles and captions clear of every box
        if a.name != "box":
            assert not any(_overlap(s, (b.x0 * width, b.x1 * width, b.y0, b.y1)) for b in boxes), a.text


def test_the_command_line_writes_the_drawing_as_a_page_that_works_offline(tmp_path):
    out = tmp_path / "drawn" / "stacked.html"
    r = subprocess.run(
        [sys.executable, "-m", "cnncompare", "lesson", "stacked", "--plot", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"wrote {out}" in r.stdout and "What it shows" in r.stdout
    page = out.read_text(encoding="utf-8")
    assert "plotly" in page and out.stat().st_size > 1_000_000  # plotly.js inside the page
    # no script from the CDN (the bundle itself names cdn.plot.ly as a default for map data, never fetched here)
    assert not re.search(r"<script[^>]+src=", page) and 'src="https://cdn.plot.ly' not in page
    assert "1,179,648 weights" in page and "3,211,264 weights" in page


def test_only_the_counting_lessons_draw(tmp_path, capsys):
    assert main(["lesson", "keras", "--plot", str(tmp_path / "x.html")]) == 2
    assert "--plot draws the counting lessons (reductions, stacked)" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
