"""`--html` reports, opened in a real browser: headless Chromium (Debian's `chromium`) loads each
generated report with every network request failing, and the page must say that every chart drew
(a canvas with painted pixels, no script error, nothing printed as an error on the console). The
numbers in the charts must be the ones the same run wrote to --json. A page whose charting library
is missing must fail the same check (the check can fail).

Environment: LOOM_BINARY (the loom executable), LOOM_SOURCE_DIR (the repository).
"""
import json
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.environ.get("LOOM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("LOOM_BINARY", os.path.join(ROOT, "build", "loom"))
CHROMIUM = shutil.which("chromium")


def loom(*args, timeout=600):
    run = subprocess.run([BINARY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"loom {' '.join(args)}: {run.stderr[-2000:]}"
    return run


def open_in_chromium(path, tmp_path, screenshot=None):
    """Loads `path` offline in headless Chromium: (the #render-status attributes, console errors)."""
    assert CHROMIUM, "chromium is not installed (scripts/setup installs it)"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            # Offline: any request to the network fails, so a report that needs one cannot draw.
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    run = subprocess.run(base + ["--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    match = re.search(r'<div id="render-status"([^>]*)>', run.stdout)
    assert match, f"{path}: no #render-status in the page Chromium rendered"
    status = dict(re.findall(r'data-([a-z]+)="([^"]*)"', match.group(1)))
    console = [line for line in run.stderr.splitlines()
               if "CONSOLE" in line and re.search(r"Uncaught|Error|error", line)]
    if screenshot:
        shot = subprocess.run(base + ["--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={screenshot}",
                                      f"file://{path}"], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr[-2000:]
    return status, console


def report_json(html):
    """The data the page draws from (the REPORT object inlined in it)."""
    match = re.search(r"var REPORT = (.*?);\n</script>", html, re.S)
    assert match, "no inlined REPORT data"
    return json.loads(match.group(1))


def assert_all_drawn(path, tmp_path, expect_at_least, screenshot=None):
    html = path.read_text()
    # Self-contained: no external script, style sheet or image.
    assert not re.search(r"<(script|img|iframe)[^>]*\bsrc=", html), "the report loads something from outside"
    assert "<link" not in html
    status, console = open_in_chromium(path, tmp_path, screenshot)
    charts = int(status["charts"])
    assert charts >= expect_at_least, status
    assert status["rendered"] == str(charts), status
    assert status["nonempty"] == str(charts), status
    assert status["errors"] == "", status
    assert console == [], console
    return report_json(html)


def test_bench_copies_report_draws_every_chart_with_the_runs_numbers(tmp_path):
    html, js = tmp_path / "copies.html", tmp_path / "copies.json"
    loom("bench", "copies", "--images", "4", "--reps", "2", "--warmup", "0",
         "--strategies", "serial,threads", "--html", str(html), "--json", str(js))
    data = assert_all_drawn(html, tmp_path, 5, screenshot=tmp_path / "copies.png")
    assert (tmp_path / "copies.png").stat().st_size > 10_000
    bench = json.loads(js.read_text())
    charts = {c["title"]: c for c in data["charts"]}
    bars = charts["Throughput per strategy"]
    by_name = {row["strategy"]: row for row in bench["strategies"]}
    assert bars["labels"] == [row["strategy"] for row in bench["strategies"]]
    for label, median, reps in zip(bars["labels"], bars["values"], bars["repetitions"]):
        assert median == pytest.approx(by_name[label]["throughput"])
        assert reps == pytest.approx(by_name[label]["throughputs"])
    assert bars["ideal"] == pytest.approx(bench["ideal_throughput"]) and bars["ideal"] > 0
    # Latency distributions: every strategy, percent axis ending at 100.
    cdf = charts["Latency distribution per strategy"]
    assert {s["name"] for s in cdf["series"]} == {"serial", "threads", "loom"}
    for s in cdf["series"]:
        assert s["points"][-1][1] == pytest.approx(100)
    # Timelines: Loom's workers (one run per inference here: 4 copies x 4 images, no batching of
    # a fixed-batch model) and one lane per thread of the naive threads strategy.
    loom_timeline = charts["Timeline: loom"]
    assert all(lane.startswith("worker") or lane.startswith("callers") for lane in loom_timeline["lanes"])
    assert len(loom_timeline["spans"]) == 16
    threads = charts["Timeline: threads"]
    assert len(threads["lanes"]) == 4 and len(threads["spans"]) == 16
    assert all(0 <= start <= end for _, start, end, _ in threads["spans"])
    assert "Inferences running at once" in charts


def test_overhead_load_and_pipeline_reports_draw(tmp_path):
    overhead = tmp_path / "overhead.html"
    loom("bench", "overhead", "--runs", "200", "--html", str(overhead))
    assert_all_drawn(overhead, tmp_path, 1)

    load = tmp_path / "load.html"
    loom("bench", "load", "--clients", "1,2", "--rates", "0.5", "--seconds", "0.3", "--reps", "1",
         "--html", str(load))
    data = assert_all_drawn(load, tmp_path, 5)
    assert any(c["kind"] == "cdf" for c in data["charts"])

    pipe, trace = tmp_path / "pipeline.html", tmp_path / "pipeline.json"
    loom("pipeline", "bench", "pipelines/video-multi.yaml", "--limit", "4", "--reps", "1",
         "--html", str(pipe), "--trace", str(trace))
    data = assert_all_drawn(pipe, tmp_path, 3)
    gantt = [c for c in data["charts"] if c["kind"] == "gantt"]
    assert gantt and any(lane.startswith("pipeline thread") for lane in gantt[0]["lanes"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e.get("cat") for e in events} >= {"run", "node"}


def test_a_page_without_its_charting_library_fails_the_check(tmp_path):
    """The browser check is not vacuous: the same report with Chart.js cut out reports errors."""
    html = tmp_path / "overhead.html"
    loom("bench", "overhead", "--runs", "100", "--html", str(html))
    text = html.read_text()
    start = text.index("<script>") + len("<script>")
    end = text.index("</script>", start)
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + "\n" + text[end:])
    status, _ = open_in_chromium(broken, tmp_path)
    assert status["rendered"] == "0"
    assert "Chart" in status["errors"]
