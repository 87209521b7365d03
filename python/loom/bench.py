"""``loom bench`` from Python: the naive strategies and Loom side by side, in one run.

Each function returns the same report as ``loom bench ... --json``: a dict with every strategy's
throughput and latencies, the ideal, Loom's plan and the verdict. Relative paths are resolved
against the current directory, then against the Loom checkout this module was built from.

From the command line, the benchmarks whose strategies are Python's own (PyTorch):

    python3 -m loom.bench face-chain [--frames 48] [--reps 3] [--html FILE] [--json FILE]
    python3 -m loom.bench dask [--count 64] [--reps 3] [--json FILE]
"""
import json
import os

from . import _loom

_PHOTOS = ["messi5.jpg", "imageTextN.png", "imageTextR.png", "text_motion.jpg", "text_defocus.jpg",
           "licenseplate_motion.jpg"]
_BLAZEFACE = "models/face_detection_back_256x256_barracuda.onnx"
_FANOUT = [_BLAZEFACE, "models/mlsd_320x320_tiny.onnx", "models/ch_PP-OCRv4_det_infer.onnx"]


def _path(p):
    p = os.fspath(p)
    if os.path.isabs(p) or os.path.exists(p):
        return p
    candidate = os.path.join(_loom._source_dir, p)
    return candidate if os.path.exists(candidate) else p


def copies(model=_BLAZEFACE, copies=4, images=None, items=32, reps=5, warmup=1, cores=0, sweep=False,
           strategies=None, size=(640, 480)):
    """N copies of one model over K images: serial, threads, processes, batch, shared pool, Loom."""
    images = [_path(i) for i in (images or [os.path.join("data", f) for f in _PHOTOS])]
    return json.loads(_loom._bench_copies(_path(model), copies, images, items, reps, warmup, cores, sweep,
                                          list(strategies or []), size[0], size[1]))


def fanout(models=None, video="data/vtest.avi", frames=48, reps=5, warmup=1, cores=0, sweep=False,
           strategies=None, size=(640, 480)):
    """Several different models on every frame of a video."""
    models = [_path(m) for m in (models or _FANOUT)]
    return json.loads(_loom._bench_fanout(models, _path(video), frames, reps, warmup, cores, sweep,
                                          list(strategies or []), size[0], size[1]))


def overhead(runs=2000):
    """Engine.Infer() against a bare session run of a one-Add model, on one pinned core."""
    return json.loads(_loom._bench_overhead(runs))


def python_overhead(runs=5000, reps=5):
    """``Engine.infer`` from Python against C++ ``Engine::Infer``, on the tiny Add model, one core.

    Both sides are timed in this process, interleaved ``reps`` times: the C++ figure comes from
    ``loom bench overhead`` (its ``engine_p50_us``), the Python one from ``runs`` calls of
    ``engine.infer`` on an engine of one core (time.perf_counter_ns around each call). Returns the
    medians and their difference: what Python adds per call.
    """
    import statistics
    import tempfile
    import time

    import numpy as np

    from . import Engine, Model

    cpp, py = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "add.onnx")
        _loom._write_add_model(path, 4)
        x = {"x": np.ones((1, 4), np.float32)}
        with Engine([Model("add", path)], cores=1) as engine:
            for _ in range(200):
                engine.infer("add", x)
            for _ in range(reps):
                cpp.append(json.loads(_loom._bench_overhead(runs))["engine_p50_us"])
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter_ns()
                    engine.infer("add", x)
                    times.append(time.perf_counter_ns() - t0)
                py.append(statistics.median(times) / 1000.0)
    return {"runs": runs, "reps": reps, "cpp_infer_p50_us": statistics.median(cpp),
            "python_infer_p50_us": statistics.median(py),
            "python_overhead_p50_us": statistics.median(py) - statistics.median(cpp)}


def face_chain(video="data/Megamind.avi", frames=48, reps=3, strategies=None, cores=0):
    """The face chain (BlazeFace -> landmarks -> frown classifier) in torch eager (reference BLAS and
    OpenBLAS), nn.DataParallel, TorchScript, ONNX Runtime sessions one after another and a thread per
    model, beside Loom's pipeline and the chain's ideal (see ``python3 -m loom.bench face-chain -h``)."""
    from . import _face_chain_bench
    return _face_chain_bench.run(video, frames, reps, strategies, cores)


_COMMANDS = {"face-chain": "_face_chain_bench", "dask": "_dask_bench"}


def _write_json(report, dest):
    """Writes a report as indented JSON to the file `dest`, or to stdout when `dest` is "-"."""
    text = json.dumps(report, indent=2)
    if dest == "-":
        print(text)
    else:
        with open(dest, "w") as f:
            f.write(text + "\n")


def main(argv=None):
    import importlib
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in _COMMANDS:
        print("usage: python3 -m loom.bench {" + ",".join(_COMMANDS) + "} [options]  (-h for each)", file=sys.stderr)
        return 2
    return importlib.import_module("." + _COMMANDS[argv[0]], __package__).main(argv[1:])


if __name__ == "__main__":
    import sys
    sys.exit(main())
