"""Pipelines from Python: records in frame order, geometry as NumPy arrays, the caller's own cv2
loop feeding frames, and errors."""
import os

import cv2
import numpy as np
import pytest

import loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PIPELINES = os.path.join(ROOT, "pipelines")
DATA = os.path.join(ROOT, "data")


def test_ocr_reads_the_page_with_boxes_as_arrays():
    ocr = loom.Pipeline(os.path.join(PIPELINES, "ocr.yaml"))
    records = list(ocr.run(os.path.join(DATA, "imageTextN.png")))
    assert len(records) == 1
    r = records[0]
    texts = [t["text"] for t in r["text"]]
    assert texts[0] == "technical details are too complex to cover in the book itself."
    assert len(texts) == 13
    quad = r["text"][0]["quad"]
    assert isinstance(quad, np.ndarray) and quad.shape == (4, 2)
    assert set(r["timings"]["text"]) == {"compute_ms", "model_wait_ms", "core_wait_ms"}


def test_records_come_in_frame_order_and_a_stopped_iteration_ends_the_run():
    faces = loom.Pipeline(os.path.join(PIPELINES, "faces.yaml"), in_flight=4)
    records = list(faces.run(os.path.join(DATA, "Megamind.avi"), limit=12))
    assert [r["frame"] for r in records] == list(range(12))
    with_face = [r for r in records if len(r["faces"]) > 0]
    assert with_face and with_face[0]["faces"][0]["box"].shape == (4,)
    # Breaking out of the loop early stops the run (and its threads) cleanly.
    for i, r in enumerate(faces.run(os.path.join(DATA, "Megamind.avi"), limit=100)):
        if i == 2:
            break
    assert len(list(faces.run(os.path.join(DATA, "messi5.jpg")))) == 1


def test_a_cv2_loop_feeds_frames_and_gets_them_back_in_order():
    faces = loom.Pipeline(os.path.join(PIPELINES, "faces.yaml"))
    video = cv2.VideoCapture(os.path.join(DATA, "Megamind.avi"))
    out = []
    for i in range(10):
        ok, frame = video.read()
        assert ok
        assert faces.submit(frame, name=f"f{i}") == i
        out.extend(faces.results())          # whatever is ready, without waiting
    faces.finish()
    out.extend(faces.results(wait=True))     # the rest
    assert [r["frame"] for r in out] == list(range(10))
    assert [r["source"] for r in out] == [f"f{i}" for i in range(10)]
    with pytest.raises(loom.InvalidArgument):
        faces.submit(np.zeros((4, 4, 2), np.uint8))


def test_bad_pipeline_files_raise_with_the_position(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("models:\n  - {name: face, path: " + os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx") +
                    "}\nsource: {path: " + os.path.join(DATA, "messi5.jpg") + "}\nnodes:\n  - {name: fi, type: preprocess, sise: 3}\n")
    with pytest.raises(loom.InvalidArgument, match=r"p.yaml:5:\d+: node 'fi': unknown key 'sise' in the node; did you mean 'size'\?"):
        loom.Pipeline(str(path))
    with pytest.raises(loom.NotFound):
        loom.Pipeline(str(tmp_path / "none.yaml"))


def test_pipeline_bench_returns_the_report():
    report = loom.Pipeline(os.path.join(PIPELINES, "faces.yaml")).bench(reps=1, input=os.path.join(DATA, "Megamind.avi"), limit=8)
    assert [s["strategy"] for s in report["strategies"]] == ["sequential", "thread-per-model", "loom"]
    assert report["frames"] == 8 and report["verdict"].startswith("verdict: loom = ")
