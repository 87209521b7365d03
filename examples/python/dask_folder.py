#!/usr/bin/env python3
"""A folder of photos through a pipeline on a Dask cluster: every worker process holds one Loom
engine on cores of its own (claimed by address on its host, never shared), the files are cut into
partitions, and the records come back in the order of the files.

    python3 examples/python/dask_folder.py [IMAGES...]                                  # a LocalCluster
    python3 examples/python/dask_folder.py --scheduler tcp://HOST:8786 IMAGES...        # a real cluster
    python3 examples/python/dask_folder.py --pipeline pipelines/detect-folder.yaml ...  # another job

On a real cluster, start `dask scheduler` on one machine and `dask worker tcp://HOST:8786
--nworkers N --nthreads 1` on each (Loom, its models and the images at the same paths on every
machine): each worker claims its share of its own machine's cores when its first task starts.
"""
import argparse
import glob
import os

from distributed import Client, LocalCluster

import loom.dask

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster: single-threaded worker processes")
    parser.add_argument("--pipeline", default=os.path.join(ROOT, "pipelines", "faces-folder.yaml"))
    args = parser.parse_args()
    images = args.images or sorted(glob.glob(os.path.join(ROOT, "data", "*.jpg")))
    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                       processes=True, dashboard_address=None)
    with Client(args.scheduler or cluster) as client:
        for worker, cores in sorted(loom.dask.worker_cores(client).items()):
            print(f"worker {worker}: cores {cores}")
        for record in loom.dask.run_pipeline(client, args.pipeline, images):
            found = {k: len(v) for k, v in record.items() if isinstance(v, list)}
            print(f"{os.path.basename(record['source'])}: {record.get('error') or found}")
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    main()
