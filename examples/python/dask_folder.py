#!/usr/bin/env python3
"""Offline scale-out on Dask: a folder of images mapped over a cluster whose every worker process
holds one loom.Engine, sized to that worker's cores and created once per worker (not per task);
results are gathered in order.

    python3 examples/python/dask_folder.py [IMAGES...]                  # a LocalCluster here
    python3 examples/python/dask_folder.py --scheduler tcp://HOST:8786 IMAGES...   # a real cluster

On a multi-machine cluster, start `dask scheduler` on one machine and `dask worker tcp://HOST:8786
--nworkers N --nthreads 1` on each (Loom and its models installed at the same paths on every
machine); each worker pins itself to its share of its machine's cores before making its engine.
"""
import argparse
import glob
import os

import cv2
import numpy as np
from distributed import Client, LocalCluster, WorkerPlugin, get_worker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx")


class LoomEngine(WorkerPlugin):
    """Gives each worker process its cores and one engine on them, made when the worker starts."""

    name = "loom-engine"

    def __init__(self, model, workers_per_machine):
        self.model = model
        self.workers_per_machine = workers_per_machine

    def setup(self, worker):
        import loom
        # This worker's share of the machine: worker i of n on the machine takes cores i, i+n, ...
        cores = sorted(os.sched_getaffinity(0))
        index = abs(hash(worker.name)) % self.workers_per_machine if not str(worker.name).isdigit() \
            else int(worker.name) % self.workers_per_machine
        mine = cores[index::self.workers_per_machine] or cores
        os.sched_setaffinity(0, mine)  # the engine plans the cores this process may use
        worker.loom_engine = loom.Engine([loom.Model("face", self.model)])

    def teardown(self, worker):
        worker.loom_engine.close()


def face_score(path):
    """One task: read an image, run BlazeFace on this worker's engine, return its best face score."""
    engine = get_worker().loom_engine
    image = cv2.imread(path)
    rgb = cv2.cvtColor(cv2.resize(image, (256, 256)), cv2.COLOR_BGR2RGB)
    x = ((rgb.astype(np.float32) - 127.5) / 127.5)[None]
    out = engine.infer("face", {"input:0": x})
    logits = np.concatenate([out["Identity:0"].ravel(), out["Identity_1:0"].ravel()])
    best = float(1 / (1 + np.exp(-np.clip(logits.max(), -50, 50))))
    return os.path.basename(path), best, os.getpid()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster: single-core worker processes")
    args = parser.parse_args()
    images = args.images or sorted(glob.glob(os.path.join(ROOT, "data", "*.jpg")) +
                                   glob.glob(os.path.join(ROOT, "data", "*.png")))
    if args.scheduler:
        client = Client(args.scheduler)
        per_machine = max(1, len(client.scheduler_info()["workers"]))
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        per_machine = args.workers
    client.register_worker_plugin(LoomEngine(MODEL, per_machine))
    results = client.gather(client.map(face_score, images, pure=False))  # in the order of `images`
    for name, score, pid in results:
        print(f"{name}: face score {score:.3f} (worker process {pid})")
    client.close()


if __name__ == "__main__":
    main()
