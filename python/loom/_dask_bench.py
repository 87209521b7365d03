"""``python3 -m loom.bench dask``: a folder job on a local Dask cluster against the same job in one
process, on the same cores — what the cluster's own overhead costs.

    python3 -m loom.bench dask [--photos DIR] [--count 64] [--pipeline pipelines/detect-folder.yaml]
                               [--model det=models/seeded_yolov5s.onnx] [--set det_in.size=640] [--reps 3]

One process: ``loom.Pipeline`` over every file, on all the usable cores. The cluster:
``distributed.LocalCluster(n_workers=cores, threads_per_worker=1, processes=True)`` and
``loom.dask.run_pipeline``, each worker an engine on one core of its own. Rounds interleaved
(single, cluster, single, cluster, ...) after one untimed round that starts everything; each run is
timed from the first file handed over to the last record back; the figures are medians.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from . import _loom
from .bench import _write_json


def _path(relative):
    return relative if os.path.isabs(relative) else os.path.join(_loom._source_dir, relative)


def run(files, pipeline, models=None, overrides=None, reps=3, progress=None):
    import distributed

    import loom
    import loom.dask
    cores = len(os.sched_getaffinity(0))
    single = loom.Pipeline(pipeline, models=models, set=overrides)
    times = {"single process": [], "dask": []}
    counts = {}
    with distributed.LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        workers = loom.dask.worker_cores(client)
        for rep in range(reps + 1):
            for name in times:
                if progress:
                    progress(rep, name)
                start = time.perf_counter()
                if name == "dask":
                    records = list(loom.dask.run_pipeline(client, pipeline, files, models=models, set=overrides))
                else:
                    records = list(single.run(files=files))
                seconds = time.perf_counter() - start
                counts[name] = len(records)
                if rep > 0:
                    times[name].append(seconds)
    rates = {n: [len(files) / t for t in ts] for n, ts in times.items()}
    ratios = [d / s for d, s in zip(rates["dask"], rates["single process"])]
    return {"files": len(files), "cores": cores, "repetitions": reps, "pipeline": pipeline,
            "workers": {a: c for a, c in workers.items()}, "records": counts,
            "images_per_s": {n: statistics.median(r) for n, r in rates.items()}, "images_per_s_runs": rates,
            "dask_over_single_runs": ratios, "dask_over_single": statistics.median(ratios)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m loom.bench dask", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", help="a folder of .jpg files (default: --count photos made by scripts/make_photos)")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--pipeline", default="pipelines/detect-folder.yaml")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="NODE.KEY=VALUE (repeatable)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="write the report as JSON to FILE (- for stdout)")
    args = parser.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    overrides = dict(s.split("=", 1) for s in args.set)
    if not args.model and args.pipeline == "pipelines/detect-folder.yaml":
        models = {"det": _path("models/seeded_yolov5s.onnx")}
        overrides = overrides or {"det_in.size": "640"}
    models = {k: _path(v) for k, v in models.items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.photos
        if not folder:
            folder = os.path.join(tmp, "photos")
            subprocess.run([sys.executable, _path("scripts/make_photos"), folder, "--count", str(args.count)],
                           check=True)
        files = sorted(glob.glob(os.path.join(folder, "*.jpg")))

        def progress(rep, name):
            print(f"\rround {rep}/{args.reps}  {name:<16}", end="", file=sys.stderr, flush=True)

        report = run(files, _path(args.pipeline), models, overrides, args.reps, progress)
        print(file=sys.stderr)
    report["model_paths"], report["overrides"] = models, overrides
    if args.json != "-":
        print(f"{report['files']} photos through {args.pipeline} ({', '.join(f'{k}={v}' for k, v in overrides.items())}), "
              f"{report['cores']} cores, {args.reps} repetitions interleaved, medians")
        for name, rate in report["images_per_s"].items():
            runs = " ".join(f"{x:.2f}" for x in report["images_per_s_runs"][name])
            print(f"  {name:<16} {rate:8.2f} images/s   (runs: {runs})")
        for address, cores in sorted(report["workers"].items()):
            print(f"  dask worker {address}: cores {cores}")
        print(f"verdict: dask = {report['dask_over_single']:.2f} of the single-process rate on the same cores "
              f"(each round's ratio: {' '.join(f'{x:.2f}' for x in report['dask_over_single_runs'])})")
    if args.json:
        _write_json(report, args.json)
    return 0
