"""Record ``taskreport watch`` in a real pseudo-terminal and write it as an animated SVG for the docs.

Run: ``python integrations/record_watch.py [OUT.svg]`` (default ``docs/img/watch.svg``). It makes a few tasks on a
fresh embedded store, moves them along from this process with the library, and records what ``taskreport
watch`` draws meanwhile: the screen (as pyte, a VT100 emulator, sees it) every quarter of a second, kept when it
changes. Each kept screen becomes a frame of the SVG, shown in turn and looped. Re-run it after changing how
watch draws; ``integrations/test_terminal_watch.py`` runs it too, so it keeps working.
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _terminal import Terminal

COLUMNS, LINES = 104, 9
CELL_W, CELL_H, PAD, BAR = 8.43, 18, 12, 26
PALETTE = {
    "default": "#d0d0d0",
    "black": "#1c1c1c",
    "red": "#ef5350",
    "green": "#66bb6a",
    "brown": "#e0b050",
    "yellow": "#e0b050",
    "blue": "#64b5f6",
    "magenta": "#ce93d8",
    "cyan": "#4dd0e1",
    "white": "#f5f5f5",
}
DIM = "#8a8a8a"


def scenario(stop: threading.Event) -> None:
    """Tasks as a nightly job would report them, moved along over a few seconds."""
    import taskreport

    site = taskreport.Task.create("build site", status="processing", value=0, value_max=3)
    assets = taskreport.Task.create("compile assets", parent=site, status="processing", value=0, value_max=40)
    pages = taskreport.Task.create("render pages", parent=site, status="pending", value=0, value_max=120)
    customers = taskreport.Task.create("import customers", status="processing", value=0, value_max=1200)
    mail = taskreport.Task.create("send newsletter", status="processing", value=0, value_max=5000)
    taskreport.flush(5)
    stop.wait(1.0)
    for step in range(1, 41):
        if stop.is_set():
            return
        customers.update(value=min(1200, step * 37))
        mail.update(value=step * 95)
        if step <= 10:
            assets.update(value=step * 4)
        elif step == 11:
            assets.success()
            site.update(value=1)
            pages.processing()
        else:
            pages.update(value=min(120, (step - 11) * 5))
        if step == 33:
            customers.update(value=1200)
            customers.success()
        taskreport.flush(5)
        stop.wait(0.2)
    pages.update(value=120)
    pages.success()
    site.update(value=3)
    site.success()
    mail.update(value=3800)
    mail.error(data={"message": "mail server refused: quota exceeded"})
    taskreport.flush(5)


def record() -> list[tuple[float, list[list[tuple[str, str, bool]]]]]:
    home = tempfile.mkdtemp(prefix="taskreport-record-")
    os.environ.update(TASKREPORT_HOME=home, TASKREPORT_CONFIG=os.path.join(home, "config.toml"))
    for key in ("TASKREPORT_URL", "TASKREPORT_TOKEN", "TASKREPORT_ORG", "TASKREPORT_PROJECT", "NO_COLOR"):
        os.environ.pop(key, None)
    env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    script = str(Path(sys.executable).parent / "taskreport")
    stop = threading.Event()
    worker = threading.Thread(target=scenario, args=(stop,), daemon=True)
    worker.start()
    time.sleep(0.8)  # the tasks exist before watch looks for the running ones
    command = f"printf '$ taskreport watch\\n'; exec {script} watch --interval 0.2"
    frames: list[tuple[float, list[list[tuple[str, str, bool]]]]] = []
    with Terminal(["sh", "-c", command], env, columns=COLUMNS, lines=LINES, stderr_to_pipe=False) as term:
        start = time.monotonic()
        while term.process.poll() is None and time.monotonic() - start < 60:
            term.pump(0.25)
            frames.append((time.monotonic() - start, snapshot(term)))
        term.wait()
        frames.append((time.monotonic() - start, snapshot(term)))
    stop.set()
    worker.join(10)
    kept = [frames[0]]
    for at, screen in frames[1:]:
        if screen != kept[-1][1]:
            kept.append((at, screen))
    return kept


def snapshot(term: Terminal) -> list[list[tuple[str, str, bool]]]:
    """The screen as rows of (character, colour, bold)."""
    rows = []
    for y in range(term.screen.lines):
        line = term.screen.buffer[y]
        rows.append([(line[x].data or " ", line[x].fg, line[x].bold) for x in range(term.screen.columns)])
    return rows


def frame_svg(screen: list[list[tuple[str, str, bool]]]) -> str:
    out = []
    for y, cells in enumerate(screen):
        baseline = BAR + PAD + (y + 1) * CELL_H - 5
        x = 0
        while x < len(cells):
            _, fg, bold = cells[x]
            end = x
            while end < len(cells) and cells[end][1:] == (fg, bold):
                end += 1
            text = "".join(c for c, _, _ in cells[x:end])
            if text.strip():
                color = PALETTE.get(fg, DIM if fg == "default" else PALETTE["default"])
                weight = ' font-weight="bold"' if bold else ""
                out.append(
                    f'<text x="{PAD + x * CELL_W:.1f}" y="{baseline}" fill="{color}"{weight} '
                    f'xml:space="preserve">{html.escape(text.rstrip())}</text>'
                )
            x = end
    return "".join(out)


def svg(frames: list[tuple[float, list[list[tuple[str, str, bool]]]]], hold: float = 3.0) -> str:
    width = PAD * 2 + COLUMNS * CELL_W
    height = BAR + PAD * 2 + LINES * CELL_H
    total = frames[-1][0] + hold
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        'font-size="14">',
        "<title>taskreport watch, recorded in a terminal</title>",
        '<rect width="100%" height="100%" rx="8" fill="#1e1e1e"/>',
        f'<rect width="100%" height="{BAR}" rx="8" fill="#333"/>',
        f'<rect y="{BAR - 8}" width="100%" height="8" fill="#333"/>',
        *(f'<circle cx="{18 + i * 18}" cy="{BAR / 2}" r="5.5" fill="{c}"/>'
          for i, c in enumerate(("#ff5f56", "#ffbd2e", "#27c93f"))),
        f'<rect width="1" height="1" opacity="0"><animate id="loop" attributeName="x" from="0" to="0" '
        f'begin="0s;loop.end" dur="{total:.2f}s"/></rect>',
    ]
    poster = len(frames) // 2  # what a viewer without animation shows: the run half-way
    for i, (at, screen) in enumerate(frames):
        until = frames[i + 1][0] if i + 1 < len(frames) else total
        sets = f'<set attributeName="display" to="inline" begin="loop.begin+{at:.2f}s" dur="{until - at:.2f}s"/>'
        if i == poster:
            if at > 0:
                sets += f'<set attributeName="display" to="none" begin="loop.begin" dur="{at:.2f}s"/>'
            if total > until:
                sets += (f'<set attributeName="display" to="none" begin="loop.begin+{until:.2f}s" '
                         f'dur="{total - until:.2f}s"/>')
        display = "inline" if i == poster else "none"
        parts.append(f'<g display="{display}">{sets}{frame_svg(screen)}</g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "docs" / "img" / "watch.svg"
    frames = record()
    # start the loop on the first frame that shows bars, not on the prompt alone
    first = next((i for i, (_, s) in enumerate(frames) if any(c == "█" for row in s for c, _, _ in row)), 0)
    offset = frames[first][0]
    frames = [(at - offset, screen) for at, screen in frames[first:]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg(frames))
    last = ["".join(c for c, _, _ in row).rstrip() for row in frames[-1][1]]
    print(f"wrote {out}: {len(frames)} frames over {frames[-1][0]:.1f} s; the last one:")
    print("\n".join(line for line in last if line))


if __name__ == "__main__":
    main()
