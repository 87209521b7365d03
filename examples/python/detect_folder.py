#!/usr/bin/env python3
"""A folder of photos through a YOLOv5 detector, four ways, on the same files: the authors' loop in
PyTorch eager, the same loop on a ThreadPoolExecutor, on a multiprocessing.Pool (a process per
worker, each loading the model), and loom.Pipeline (pipelines/detect-folder.yaml, the model
exported from the same nn.Module by loom.from_torch).

    python3 examples/python/detect_folder.py [FOLDER] [--size 640] [--model s] [--workers 2]

FOLDER defaults to 8 photos of 1920x1080 made by scripts/make_photos. The YOLOv5 weights are
seeded (for timing: the boxes mean nothing); every way decodes with the same code, so they find
the same boxes. Each way runs over the files twice: the first pass with whatever start-up it has
left (a pool's processes loading their models, the engine's first runs), the second warm.
"""
import argparse
import concurrent.futures
import glob
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import cv2
import torch

import loom
from loom import _loom, yolo

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANCHORS = [list(a) for a in yolo.ANCHORS]


def load(size_letter):
    net = yolo.YOLOv5(size_letter)
    net.load_state_dict(torch.load(os.path.join(ROOT, "models", f"seeded_yolov5{size_letter}.pt")))
    return net.eval()


def detect(net, path, size):
    """The authors' per-image step: read, letterbox, run, decode, map the boxes back."""
    image = cv2.imread(path)
    if image is None:
        return path, None
    padded, r, (left, top) = yolo.letterbox(image, size)
    with torch.no_grad():
        maps = [m.numpy() for m in net(torch.from_numpy(yolo.to_input(padded)))]
    boxes = _loom._yolo_decode(maps, ANCHORS, list(yolo.STRIDES), 0.25, 0.45, 300)
    return path, [((x1 - left) / r, (y1 - top) / r, (x2 - left) / r, (y2 - top) / r, s, c)
                  for (x1, y1, x2, y2), s, c in boxes]


_worker_net = None


def _init_worker(size_letter, threads):
    global _worker_net
    torch.set_num_threads(threads)
    _worker_net = load(size_letter)


def _detect_in_worker(args):
    return detect(_worker_net, *args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--size", type=int, default=640, help="letterbox size (a multiple of 32)")
    parser.add_argument("--model", default="s", choices=("n", "s", "m"), help="YOLOv5 size")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if not folder:
            folder = os.path.join(tmp, "photos")
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_photos"), folder, "--count", "8"],
                           check=True)
        files = sorted(glob.glob(os.path.join(folder, "*.jpg")))
        cores = len(os.sched_getaffinity(0))
        results, first, second = {}, {}, {}

        def twice(name, run):
            """Runs over the files twice: the first pass with whatever start-up is left (processes,
            sessions, the plan's measurements), the second warm."""
            start = time.perf_counter()
            run()
            first[name] = time.perf_counter() - start
            start = time.perf_counter()
            results[name] = run()
            second[name] = time.perf_counter() - start

        torch.set_num_threads(cores)  # the authors' loop: torch on every core, one image at a time
        net = load(args.model)
        twice("torch eager", lambda: [detect(net, f, args.size) for f in files])
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            twice("thread pool", lambda: list(pool.map(lambda f: detect(net, f, args.size), files)))
        # Each process: its own model, its share of the cores' threads.
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers, _init_worker,
                                                       (args.model, max(1, cores // args.workers))) as pool:
            spawn = time.perf_counter() - start
            twice("process pool", lambda: pool.map(_detect_in_worker, [(f, args.size) for f in files]))
        first["process pool"] += spawn
        model = loom.from_torch(net, torch.zeros(1, 3, 320, 320), name="det", input_names=["images"],
                                output_names=["p3", "p4", "p5"],
                                dynamic_axes={"images": {2: "h", 3: "w"}, "p3": {2: "h8", 3: "w8"},
                                              "p4": {2: "h16", 3: "w16"}, "p5": {2: "h32", 3: "w32"}})
        pipeline = loom.Pipeline(os.path.join(ROOT, "pipelines", "detect-folder.yaml"), models={"det": model},
                                 set={"det_in.size": args.size})
        twice("loom", lambda: [(r["source"], r.get("objects")) for r in pipeline.run(folder + "/*.jpg")])

    print(f"{len(files)} photos, YOLOv5{args.model} (seeded) at {args.size}, {cores} cores, torch on "
          f"{torch.get_num_threads()} threads with {loom._torch.blas_in_use()}, {args.workers} workers")
    counts = {name: [len(b) if b is not None else -1 for _, b in r] for name, r in results.items()}
    print(f"  {'':<14} {'images/s':>9} {'first pass':>11}")
    for name in second:
        same = "same boxes as torch eager" if counts[name] == counts["torch eager"] else "DIFFERENT box counts"
        print(f"  {name:<14} {len(files) / second[name]:9.2f} {len(files) / first[name]:11.2f}  ({same})")
    print("verdict: loom = " + ", ".join(f"{second[n] / second['loom']:.2f}x {n}" for n in second if n != "loom") +
          " (second passes; the first pass includes what start-up each way has left)")

if __name__ == "__main__":
    main()
