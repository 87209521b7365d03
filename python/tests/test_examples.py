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


def test_dask_folder_runs_the_folder_job_on_two_workers_with_disjoint_cores():
    out = run("dask_folder.py", os.path.join(ROOT, "data", "messi5.jpg"), os.path.join(ROOT, "data", "text_motion.jpg"),
              "--workers", "2")
    lines = out.strip().splitlines()
    cores = [line.split("cores ")[1] for line in lines if line.startswith("worker ")]
    assert len(cores) == 2 and cores[0] != cores[1], out
    assert "messi5.jpg: {'faces': 1}" in lines, out
    assert lines[-1].startswith("text_motion.jpg: "), out


def test_detect_folder_compares_the_torch_loops_with_loom_on_the_same_boxes():
    out = run("detect_folder.py", "--model", "n", "--size", "320")
    for name in ("torch eager", "thread pool", "process pool", "loom"):
        line = next(l for l in out.splitlines() if l.strip().startswith(name))
        assert "(same boxes as torch eager)" in line, out
    assert "verdict: loom = " in out


def test_face_chain_runs_the_torch_models_on_loom_and_writes_the_video(tmp_path):
    out = run("face_chain.py", "--limit", "8", "--out", str(tmp_path / "chain.avi"))
    assert "frowning faces; annotated video: " in out, out
    normal, frown = int(out.split()[0]), int(out.split()[3])
    assert normal + frown >= 8, out  # Megamind's first frames: one or two faces each
    assert (tmp_path / "chain.avi").stat().st_size > 10000
