#!/usr/bin/env python3
"""Three models on every frame of a video, in a cv2 loop written in Python: BlazeFace (faces),
M-LSD tiny (line segments) and PP-OCR det (text regions), the video decoded in Python.

    python3 examples/python/video_three_models.py [--frames 96] [--reps 3] [--quick]

Strategies, on the same frames, repetitions interleaved:
  sequential         one loom.InferenceSession per model (ONNX Runtime defaults, as onnxruntime's
                     Python API gives them), the three run one after another per frame;
  thread-per-model   a thread per model, each with its session, fed frames through a queue;
  loom               one loom.Engine with the three models: submit all three, wait, next frame
                     (a few frames in flight).
Prints frames/s for each, the ideal (every core running models at their measured single-thread
cost, decoding and preprocessing free) and the ratios. OpenCV 4.6's DNN cannot load M-LSD or PP-OCR det, hence
the ONNX Runtime sessions for the naive versions.
"""
import argparse
import collections
import os
import queue
import statistics
import threading
import time

import cv2
import numpy as np

import loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = {
    "face": os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx"),
    "lines": os.path.join(ROOT, "models", "mlsd_320x320_tiny.onnx"),
    "text": os.path.join(ROOT, "models", "ch_PP-OCRv4_det_infer.onnx"),
}
INPUTS = {"face": "input:0", "lines": "input_image_with_alpha:0", "text": "x"}


# PP-OCR det's normalization, per channel in the frame's BGR order.
DET_MEAN = np.array([0.406, 0.456, 0.485], np.float32).reshape(3, 1, 1)
DET_SCALE = (1.0 / np.array([0.225, 0.224, 0.229], np.float32)).reshape(3, 1, 1)


def preprocess(frame):
    """Each model's input from one BGR frame, as its authors preprocess it (resized as uint8, then
    float32 in place)."""
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    face = cv2.resize(rgb, (256, 256)).astype(np.float32)[None]
    face -= 127.5
    face *= 1.0 / 127.5
    lines = np.empty((1, 320, 320, 4), np.float32)
    lines[0, :, :, :3] = cv2.resize(rgb, (320, 320))
    lines[0, :, :, 3] = 1.0
    text = np.empty((1, 3, 480, 640), np.float32)  # NCHW, BGR
    text[0] = cv2.resize(frame, (640, 480)).transpose(2, 0, 1)
    text[0] *= 1.0 / 255.0
    text[0] -= DET_MEAN
    text[0] *= DET_SCALE
    return {"face": face, "lines": lines, "text": text}


def frames(path, count):
    """Decodes `count` frames in Python (the loop under test), cycling a short video."""
    video = cv2.VideoCapture(path)
    done = 0
    while done < count:
        ok, frame = video.read()
        if not ok:
            video.release()
            video = cv2.VideoCapture(path)
            continue
        done += 1
        yield frame
    video.release()


def sequential(path, count, sessions):
    for frame in frames(path, count):
        x = preprocess(frame)
        for name, s in sessions.items():
            s.run(None, {INPUTS[name]: x[name]})


def thread_per_model(path, count, sessions):
    queues = {name: queue.Queue(maxsize=4) for name in sessions}
    done = queue.Queue()

    def worker(name):
        s = sessions[name]
        while True:
            x = queues[name].get()
            if x is None:
                return
            s.run(None, {INPUTS[name]: x})
            done.put(name)

    threads = [threading.Thread(target=worker, args=(n,)) for n in sessions]
    for t in threads:
        t.start()
    for frame in frames(path, count):
        x = preprocess(frame)
        for name in sessions:
            queues[name].put(x[name])
    for name in sessions:
        queues[name].put(None)
    for t in threads:
        t.join()


def with_loom(path, count, engine, in_flight=4):
    pending = collections.deque()
    for frame in frames(path, count):
        x = preprocess(frame)
        pending.append([engine.submit(name, {INPUTS[name]: x[name]}) for name in MODELS])
        if len(pending) >= in_flight:
            for f in pending.popleft():
                f.result()
    while pending:
        for f in pending.popleft():
            f.result()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=os.path.join(ROOT, "data", "vtest.avi"))
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a short run (tests)")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.reps = 6, 1
    sessions = {name: loom.InferenceSession(path) for name, path in MODELS.items()}
    per_thread = {name: loom.InferenceSession(path) for name, path in MODELS.items()}
    warm = preprocess(next(frames(args.video, 1)))
    # The engine plans from each model's cost on a real frame's input (PP-OCR det's dims are dynamic).
    engine = loom.Engine([loom.Model(n, p, warmup={INPUTS[n]: warm[n]}) for n, p in MODELS.items()])
    for name in MODELS:  # every session warm at the frame's shapes
        sessions[name].run(None, {INPUTS[name]: warm[name]})
        per_thread[name].run(None, {INPUTS[name]: warm[name]})
        engine.infer(name, {INPUTS[name]: warm[name]})
    strategies = {
        "sequential (python)": lambda: sequential(args.video, args.frames, sessions),
        "thread-per-model (python)": lambda: thread_per_model(args.video, args.frames, per_thread),
        "loom (python)": lambda: with_loom(args.video, args.frames, engine),
    }
    fps = {name: [] for name in strategies}
    for rep in range(args.reps + 1):  # round 0 warms up
        for name, run in strategies.items():
            start = time.perf_counter()
            run()
            if rep > 0:
                fps[name].append(args.frames / (time.perf_counter() - start))
    # The ceiling: every core busy with model runs at their measured single-thread cost (the
    # engine's plan measured them), decoding and preprocessing free. No strategy can pass it.
    costs = engine.plan_dict["costs_ms"]
    ideal = loom.usable_cores() * 1000.0 / sum(costs[name][1] for name in MODELS)
    engine.close()
    medians = {name: statistics.median(v) for name, v in fps.items()}
    lm = medians["loom (python)"]
    print(f"3 models per frame, {args.frames} frames of {os.path.basename(args.video)} decoded in Python, "
          f"{loom.usable_cores()} cores, {args.reps} repetitions, medians")
    print(f"{'strategy':30s} {'frames/s':>9s} {'loom is':>8s}")
    for name, v in medians.items():
        print(f"{name:30s} {v:9.2f} {'' if name == 'loom (python)' else f'{lm / v:.2f}x':>8s}")
    print(f"{'ideal (cores / sum of 1-thread ms)':30s} {ideal:9.2f}")
    print(f"verdict: loom = {lm / medians['sequential (python)']:.2f}x sequential, "
          f"{lm / medians['thread-per-model (python)']:.2f}x thread-per-model, {lm / ideal:.2f} of ideal; "
          f"the ideal is {ideal / medians['thread-per-model (python)']:.2f}x thread-per-model")


if __name__ == "__main__":
    main()
