"""Loom on a Dask cluster: a folder job (or a model over many inputs) spread over worker processes,
each holding one Loom engine on cores of its own.

    from distributed import Client
    import loom.dask

    client = Client("tcp://scheduler:8786")       # or Client(LocalCluster(n_workers=2, threads_per_worker=1))
    for record in loom.dask.run_pipeline(client, "pipelines/detect-folder.yaml", files):
        ...                                        # in the order of `files`
    paths = loom.dask.run_pipeline(client, "pipelines/detect-folder.yaml", files, output="out/parts")
    outputs = loom.dask.map_model(client, loom.Model("face", "models/face.onnx"), inputs)

Cores: every worker process claims a slot of its host's cores before it makes its engine. Slots
are handed out under a cluster-wide lock, lowest free slot first, and recorded on the scheduler by
worker address, so the workers of one host get disjoint cores whatever their names and whenever
they start; a worker that died gives its slot to the next one. A slot is ``cores_per_worker``
cores (default: the host's usable cores divided by the Loom workers on that host when its first
one claims); a worker that finds no free slot — more Loom workers than cores on the host — fails
its task with an error that says so, rather than sharing cores.

Work: the inputs are cut into contiguous partitions (default: up to four per worker, of at least 16
inputs where there are enough), each a task. A
partition's records come back whole (or are written to its own file, atomically), so a partition
rerun after its worker died replaces its records: no input is lost or recorded twice. Workers
should run one task thread each (``--nthreads 1``, ``threads_per_worker=1``): Loom plans the
worker's cores itself.

Every worker must see the pipeline, model and input files at the same paths (a shared file
system, or the same checkout on every machine).
"""
import ctypes
import json
import os
import threading

_PLUGIN = "loom-cores"
_LOCK = "loom-cores"
_ENGINES = {}  # per worker process: (kind, key) -> a loom.Pipeline or loom.Engine on this worker's cores
_ENGINES_LOCK = threading.Lock()
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


# -- cores -------------------------------------------------------------------------------------
def plan_slot(claims, alive, me, host_cores, cores_per_worker=None):
    """Pure rule of a worker's cores: ``claims`` ({address: slot} recorded for this host, possibly
    holding dead workers), ``alive`` (addresses of this host's workers now), ``me`` (this worker's
    address). Returns (claims to record, my cores). The slot size is ``cores_per_worker``, else the
    host's cores over its live workers. Raises RuntimeError when no slot is free."""
    cores = sorted(host_cores)
    claims = {a: s for a, s in claims.items() if a in alive or a == me}
    per = cores_per_worker or (len(cores) // max(1, len(set(alive) | {me})))
    slots = len(cores) // per if per > 0 else 0
    if me not in claims:
        free = sorted(set(range(slots)) - set(claims.values()))
        if not free:
            raise RuntimeError(f"more Loom workers than cores on this host: {len(set(alive) | {me})} workers, "
                               f"{len(cores)} cores, {per or 'less than 1'} core(s) each; start fewer workers per host "
                               f"or give cores_per_worker")
        claims[me] = free[0]
    slot = claims[me]
    return claims, cores[slot * per:(slot + 1) * per]


def _host(address):
    from distributed.comm.addressing import get_address_host
    return get_address_host(address)


def claim_cores(cores_per_worker=None):
    """This worker's cores (claimed once per worker process, under the cluster's lock)."""
    from distributed import Lock, get_client, get_worker
    worker = get_worker()
    with _ENGINES_LOCK:
        if getattr(worker, "loom_cores", None) is not None:
            return worker.loom_cores
        client = get_client()
        host = _host(worker.address)
        with Lock(f"{_LOCK}-{host}", client=client):
            claims = client.get_metadata([_PLUGIN, host], default={})
            alive = [a for a in client.scheduler_info()["workers"] if _host(a) == host]
            claims, cores = plan_slot(claims, alive, worker.address, os.sched_getaffinity(0), cores_per_worker)
            client.set_metadata([_PLUGIN, host], claims)
        worker.loom_cores = cores
        return cores


def _keep_large_buffers():
    """Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand freed memory back
    to the system). Setting it also fixes glibc's mmap threshold at 128 KiB, so every large buffer
    of a frame (a decoded photo, a letterboxed tensor, a model's output) becomes a fresh mapping
    whose pages the kernel maps and zeroes again: about a tenth of a folder job's time. A Loom
    worker raises the mmap threshold to 32 MiB and the trim threshold to 64 MiB, so that such
    buffers are reused, and at most that much freed memory is kept. Elsewhere (not glibc, or the
    variable unset) nothing changes."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):  # a C library without mallopt
        pass


def _engine(kind, key, make, cores_per_worker):
    """This worker's engine for `key`, made once, on its claimed cores."""
    with _ENGINES_LOCK:
        if (kind, key) in _ENGINES:
            return _ENGINES[(kind, key)]
    cores = claim_cores(cores_per_worker)
    _keep_large_buffers()
    # Loom plans the cores the creating thread may use (sched_getaffinity): this task thread's.
    os.sched_setaffinity(0, cores)
    made = make()
    with _ENGINES_LOCK:
        return _ENGINES.setdefault((kind, key), made)


# -- tasks ---------------------------------------------------------------------------------------
def _pipeline_task(pipeline, models, overrides, files, output, index, cores_per_worker):
    import loom
    key = json.dumps([os.path.abspath(pipeline), models, overrides], sort_keys=True)
    p = _engine("pipeline", key, lambda: loom.Pipeline(pipeline, models=models, set=overrides), cores_per_worker)
    records = []
    for r in p.run(files=files):
        r = dict(r)
        r.pop("timings", None)
        records.append(_plain(r))
    if output is None:
        return records
    path = os.path.join(output, f"part-{index:05d}.jsonl")
    with open(path + ".tmp", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(path + ".tmp", path)  # a rerun replaces the partition whole
    return path


def _plain(value):
    """Records hold NumPy arrays (boxes, keypoints): plain lists, for JSON and for comparing."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _model_task(model, inputs, cores_per_worker):
    import loom
    key = json.dumps(model, sort_keys=True, default=str)
    engine = _engine("model", key, lambda: loom.Engine([model]), cores_per_worker)
    return list(engine.map(model["name"], inputs))


def _worker_cores_task(cores_per_worker):
    from distributed import get_worker
    return get_worker().address, claim_cores(cores_per_worker)


# -- the client's side ---------------------------------------------------------------------------
def _partitions(items, count):
    n = len(items)
    count = max(1, min(count, n))
    bounds = [n * i // count for i in range(count + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(count)]


def _default_partitions(items, workers):
    """Up to four partitions per worker (load balance, and little to rerun when one dies), but at
    least 16 items each where there are enough: a partition runs as one pipeline run, whose first
    and last frames leave the worker's cores part idle."""
    return max(workers, min(4 * workers, items // 16))


def _workers(client):
    workers = client.scheduler_info()["workers"]
    if not workers:
        raise RuntimeError("the Dask cluster has no worker")
    return workers


def worker_cores(client, cores_per_worker=None):
    """{worker address: its cores}, claiming them where not done yet (one task per worker)."""
    futures = [client.submit(_worker_cores_task, cores_per_worker, workers=[a], pure=False, allow_other_workers=False)
               for a in _workers(client)]
    return dict(client.gather(futures))


def run_pipeline(client, pipeline, files, output=None, *, models=None, set=None, partitions=None,
                 cores_per_worker=None):
    """Runs a pipeline YAML over image ``files`` on the cluster.

    Without ``output``: yields every file's record (a dict: the pipeline's record without its
    timings, arrays as lists) in the order of ``files``, partition by partition as they finish in
    order. With ``output`` (a folder every worker can write): each partition writes
    ``part-NNNNN.jsonl`` there; returns their paths in order. ``models``/``set``: as
    :class:`loom.Pipeline`'s (paths, not Models: the workers load them). ``partitions``: how many
    tasks (default: up to four per worker, 16 files or more each).
    """
    import loom
    files = [os.fspath(f) for f in files]
    if not files:
        return iter(()) if output is None else []
    models = {k: (m.path if isinstance(m, loom.Model) else os.fspath(m)) for k, m in (models or {}).items()}
    overrides = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (set or {}).items()}
    if output is not None:
        os.makedirs(output, exist_ok=True)
    parts = _partitions(files, partitions or _default_partitions(len(files), len(_workers(client))))
    futures = [client.submit(_pipeline_task, os.path.abspath(pipeline), models, overrides, part, output, i,
                             cores_per_worker, pure=False, retries=2) for i, part in enumerate(parts)]
    if output is not None:
        return client.gather(futures)
    return _in_order(futures)


def _in_order(futures):
    for f in futures:
        yield from f.result()


def map_model(client, model, inputs, *, partitions=None, cores_per_worker=None):
    """Runs a model (a :class:`loom.Model`, a dict or a path) over ``inputs`` (each a dict of arrays,
    or one array) on the cluster; returns the outputs dicts in the order of ``inputs``."""
    import loom
    m = loom._model_dict(model)
    m.pop("warmup", None)
    inputs = list(inputs)
    parts = _partitions(inputs, partitions or _default_partitions(len(inputs), len(_workers(client))))
    futures = [client.submit(_model_task, m, part, cores_per_worker, pure=False, retries=2) for part in parts]
    return [out for part in client.gather(futures) for out in part]
