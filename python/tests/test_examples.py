"""The Python examples run (short versions), and what they print is checked."""
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(script, *args, timeout=600):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", script), *args],
                       capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_copies_folder_compares_every_strategy():
    out = run("copies_folder.py", "--quick")
    for name in ("python serial", "python threads", "python processes", "loom from python", "loom in C++"):
        assert name in out, out
    assert "verdict: loom from python = " in out


def test_video_three_models_compares_the_loops():
    out = run("video_three_models.py", "--quick")
    assert "thread-per-model (python)" in out and "verdict: loom = " in out


def test_ocr_folder_reads_the_text():
    out = run("ocr_folder.py", os.path.join(ROOT, "data", "imageTextN.png"))
    assert "technical details are too complex to cover in the book itself." in out


def test_dask_folder_finds_the_face_on_two_single_core_workers():
    out = run("dask_folder.py", os.path.join(ROOT, "data", "messi5.jpg"), os.path.join(ROOT, "data", "imageTextN.png"),
              "--workers", "2")
    lines = out.strip().splitlines()
    assert lines[0].startswith("messi5.jpg: face score ") and float(lines[0].split()[3]) > 0.5, out
    assert lines[1].startswith("imageTextN.png: face score ") and float(lines[1].split()[3]) < 0.5, out


def test_face_chain_runs_the_torch_models_on_loom_and_writes_the_video(tmp_path):
    out = run("face_chain.py", "--limit", "8", "--out", str(tmp_path / "chain.avi"))
    assert "frowning faces; annotated video: " in out, out
    normal, frown = int(out.split()[0]), int(out.split()[3])
    assert normal + frown >= 8, out  # Megamind's first frames: one or two faces each
    assert (tmp_path / "chain.avi").stat().st_size > 10000
