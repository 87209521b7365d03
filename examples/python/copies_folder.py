#!/usr/bin/env python3
"""Four copies of a face detector over a folder of photos, the way people write it in Python —
serial, a ThreadPoolExecutor with an OpenCV DNN net per thread, a multiprocessing.Pool with a net
per process — and with loom.Engine, on the same preprocessed images, in one run.

    python3 examples/python/copies_folder.py [--copies 4] [--images 64] [--reps 3] [--quick]

Prints each strategy's inferences/s (median of the repetitions, interleaved), the ratios, and
`loom bench copies`'s C++ Loom figure measured in the same rounds: loom from Python should match it.
"""
import argparse
import concurrent.futures
import glob
import multiprocessing
import os
import statistics
import time

import cv2
import numpy as np

import loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx")
PHOTOS = ["messi5.jpg", "imageTextN.png", "imageTextR.png", "text_motion.jpg", "text_defocus.jpg",
          "licenseplate_motion.jpg"]


def preprocess(path):
    """BlazeFace's input: RGB 256x256 in [-1, 1], NHWC."""
    image = cv2.imread(path)
    rgb = cv2.cvtColor(cv2.resize(image, (256, 256)), cv2.COLOR_BGR2RGB)
    return ((rgb.astype(np.float32) - 127.5) / 127.5)[None]


_net = None  # one per process (multiprocessing) or per thread (see below)


def _init_process():
    global _net
    _net = cv2.dnn.readNetFromONNX(MODEL)


def _process_copy(images):
    for x in images:
        _net.setInput(x)
        _net.forward(_net.getUnconnectedOutLayersNames())
    return len(images)


def serial(images, copies):
    net = cv2.dnn.readNetFromONNX(MODEL)
    names = net.getUnconnectedOutLayersNames()
    for _ in range(copies):
        for x in images:
            net.setInput(x)
            net.forward(names)


def threads(images, copies, nets):
    def one_copy(net):
        names = net.getUnconnectedOutLayersNames()
        for x in images:
            net.setInput(x)
            net.forward(names)
    with concurrent.futures.ThreadPoolExecutor(copies) as pool:
        list(pool.map(one_copy, nets))


def processes(images, copies, pool):
    pool.map(_process_copy, [images] * copies)


def with_loom(images, copies, engine):
    # Executor.map's shape: results in order, a few requests queued ahead, each answer dropped
    # once used (as the cv2 loops drop theirs).
    for outputs in engine.map("face", (x for _ in range(copies) for x in images)):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a short run (tests)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.reps = 8, 1
    files = [os.path.join(ROOT, "data", f) for f in PHOTOS]
    images = [preprocess(files[i % len(files)]) for i in range(args.images)]
    n = args.copies * args.images

    nets = [cv2.dnn.readNetFromONNX(MODEL) for _ in range(args.copies)]  # loaded outside the timing
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(args.copies, initializer=_init_process)
    pool.map(_process_copy, [images[:1]] * args.copies)  # the processes are up and warm
    engine = loom.Engine([loom.Model("face", MODEL)])
    def cpp_loom():
        # `loom bench copies`'s loom strategy on the same photos, in the same round as the others
        # (its own engine, planned before its timing starts); returns its measured rate.
        report = loom.bench.copies(MODEL, copies=args.copies, items=args.images, reps=1, warmup=1,
                                   strategies=["loom"], images=files)
        return next(s["throughput"] for s in report["strategies"] if s["strategy"] == "loom")

    strategies = {
        "python serial (cv2.dnn)": lambda: serial(images, args.copies),
        "python threads (cv2.dnn, a net each)": lambda: threads(images, args.copies, nets),
        "python processes (cv2.dnn, a net each)": lambda: processes(images, args.copies, pool),
        "loom from python": lambda: with_loom(images, args.copies, engine),
        "loom in C++ (loom bench copies)": cpp_loom,
    }
    rates = {name: [] for name in strategies}
    for rep in range(args.reps + 1):  # round 0 warms up
        for name, run in strategies.items():
            start = time.perf_counter()
            measured = run()
            rate = measured if measured is not None else n / (time.perf_counter() - start)
            if rep > 0:
                rates[name].append(rate)
    pool.close()
    engine.close()

    medians = {name: statistics.median(r) for name, r in rates.items()}
    loom_py = medians["loom from python"]
    print(f"{args.copies} copies of BlazeFace over {args.images} images = {n} inferences per run, "
          f"{loom.usable_cores()} cores, {args.reps} repetitions, medians")
    print(f"{'strategy':42s} {'infer/s':>9s} {'loom is':>8s}")
    for name, rate in medians.items():
        ratio = "" if name == "loom from python" else f"{loom_py / rate:.2f}x"
        print(f"{name:42s} {rate:9.1f} {ratio:>8s}")
    print(f"verdict: loom from python = {loom_py / medians['loom in C++ (loom bench copies)']:.2f}x loom in C++, "
          f"{loom_py / medians['python threads (cv2.dnn, a net each)']:.2f}x python threads, "
          f"{loom_py / medians['python processes (cv2.dnn, a net each)']:.2f}x python processes, "
          f"{loom_py / medians['python serial (cv2.dnn)']:.2f}x serial")


if __name__ == "__main__":
    main()
