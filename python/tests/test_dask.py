"""loom.dask: cores claimed by address (never by hash), disjoint on a host; records identical to a
single-process run; a worker killed mid-run and every image still recorded exactly once."""
import glob
import json
import os
import shutil
import signal
import threading

import pytest

import loom
import loom.dask

distributed = pytest.importorskip("distributed")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PIPELINES = os.path.join(ROOT, "pipelines")


def test_a_slot_is_the_lowest_free_one_by_address_and_a_dead_workers_slot_is_reused():
    cores = {0, 1, 2, 3}
    alive = ["tcp://10.0.0.5:4001", "tcp://10.0.0.5:4000"]
    claims, mine = loom.dask.plan_slot({}, alive, "tcp://10.0.0.5:4001", cores)
    assert mine == [0, 1] and claims == {"tcp://10.0.0.5:4001": 0}
    claims, mine = loom.dask.plan_slot(claims, alive, "tcp://10.0.0.5:4000", cores)
    assert mine == [2, 3]
    # A claim is kept by its address, whatever order workers ask in again.
    assert loom.dask.plan_slot(claims, alive, "tcp://10.0.0.5:4001", cores)[1] == [0, 1]
    # 4001 died; its replacement (another address) takes the free slot, not 4000's.
    alive = ["tcp://10.0.0.5:4000", "tcp://10.0.0.5:4100"]
    claims, mine = loom.dask.plan_slot(claims, alive, "tcp://10.0.0.5:4100", cores)
    assert mine == [0, 1] and set(claims) == set(alive)


def test_more_workers_than_cores_is_an_error_not_a_shared_core():
    alive = [f"tcp://h:{p}" for p in range(3)]
    with pytest.raises(RuntimeError, match="more Loom workers than cores on this host: 3 workers, 2 cores"):
        loom.dask.plan_slot({}, alive, alive[0], {0, 1})
    claims = {}
    for a in alive[:2]:
        claims, _ = loom.dask.plan_slot(claims, alive[:2], a, {0, 1})
    with pytest.raises(RuntimeError, match="more Loom workers than cores"):
        loom.dask.plan_slot(claims, alive, alive[2], {0, 1}, cores_per_worker=1)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield client


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(24):
        source = ("messi5.jpg", "licenseplate_motion.jpg", "text_motion.jpg")[i % 3]
        shutil.copy(os.path.join(ROOT, "data", source), folder / f"p{i:02d}.jpg")
    (folder / "zz_cut.jpg").write_bytes((folder / "p00.jpg").read_bytes()[:5000])
    return sorted(str(p) for p in folder.glob("*.jpg"))


def single_process(files):
    p = loom.Pipeline(os.path.join(PIPELINES, "faces-folder.yaml"))
    out = []
    for r in p.run(files=files):
        r = dict(r)
        r.pop("timings")
        out.append(loom.dask._plain(r))
    return out


def test_workers_claim_disjoint_cores(cluster):
    claimed = loom.dask.worker_cores(cluster)
    assert len(claimed) == 2
    cores = [set(c) for c in claimed.values()]
    assert all(cores) and not (cores[0] & cores[1])
    usable = len(os.sched_getaffinity(0))
    assert sum(len(c) for c in cores) == usable - usable % 2


def test_records_are_those_of_a_single_process_run_in_input_order(cluster, photos):
    records = list(loom.dask.run_pipeline(cluster, os.path.join(PIPELINES, "faces-folder.yaml"), photos, partitions=5))
    expected = single_process(photos)
    for r in records + expected:
        r.pop("frame")  # the position within its partition's run
    assert records == expected
    assert [r["source"] for r in records] == photos
    assert "truncated JPEG" in records[-1]["error"]


def test_a_worker_killed_mid_run_loses_no_image_and_records_none_twice(cluster, photos, tmp_path):
    files = photos  # 25 images, 8 partitions of 3-4, each long enough to be caught running
    pids = cluster.run(os.getpid)
    out = tmp_path / "parts"

    # Submit, then kill a worker that is running a partition once the first partition is back.
    result = {}

    def run():
        result["paths"] = loom.dask.run_pipeline(cluster, os.path.join(PIPELINES, "detect-folder.yaml"), files,
                                                 output=str(out), partitions=8,
                                                 models={"det": os.path.join(ROOT, "models", "seeded_yolov5s.onnx")},
                                                 set={"det_in.size": 640})

    thread = threading.Thread(target=run)
    thread.start()
    victim = None
    while thread.is_alive() and victim is None:
        busy = [w for w, keys in cluster.processing().items() if keys]
        done = len(glob.glob(str(out / "part-*.jsonl")))
        if done >= 1 and busy:
            victim = busy[0]
            os.kill(pids[victim], signal.SIGKILL)
        thread.join(timeout=0.05)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert victim is not None, "the run ended before a worker could be killed mid-run"
    assert victim not in cluster.scheduler_info()["workers"], "the killed worker is gone (its nanny starts another)"
    seen = {}
    for path in result["paths"]:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                seen[r["source"]] = seen.get(r["source"], 0) + 1
    assert sorted(seen) == files
    assert all(count == 1 for count in seen.values()), seen


def test_the_dask_bench_compares_the_cluster_with_one_process():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "loom.bench", "dask", "--count", "4", "--reps", "1", "--json", "-"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["records"] == {"single process": 4, "dask": 4}
    assert 0 < report["dask_over_single"] and len(report["workers"]) == report["cores"]
