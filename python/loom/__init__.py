"""Loom: many neural networks over many inputs at once, at the limit of the machine.

The engine plans the machine's cores among your models (no core is oversubscribed, whatever the
number of models and threads), queues and batches requests, and runs each batch on one worker or
across several, whichever the moment calls for.

Basic usage::

    import loom, numpy as np

    face = loom.Model("face", "models/face_detection_back_256x256_barracuda.onnx")
    with loom.Engine([face]) as engine:            # plans the cores; exits by draining
        print(engine.plan)                          # which model got which cores, and why
        out = engine.infer("face", {"input:0": x})  # dict of NumPy arrays (x: [1,256,256,3] f32)
        fut = engine.submit("face", {"input:0": x}) # concurrent.futures.Future
        futs = engine.submit_many("face", batch)    # a whole folder at once
        out = await engine.infer_async("face", {"input:0": x})   # inside asyncio

Pipelines (several models per frame, from YAML)::

    ocr = loom.Pipeline("pipelines/ocr.yaml")
    for record in ocr.run("data/imageTextN.png"):
        print([t["text"] for t in record["text"]])

Threads: every method may be called from any number of threads; the GIL is released while a
request waits or runs, and answers reach futures through one completion thread, never by making a
worker wait for the GIL.

Memory: a C-contiguous input array of the model's dtype is not copied — do not write to it until
its answer arrives; anything else is converted once. Output arrays share the engine's buffers.
"""
import asyncio as _asyncio
import atexit as _atexit
import collections as _collections
import concurrent.futures as _futures
import os as _os

from . import _loom
from . import errors
from ._records import record as _record
from ._torch import from_torch
from .errors import (AlreadyExists, Cancelled, DeadlineExceeded, Error, FailedPrecondition, Internal,
                     InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable, Unimplemented)

__version__ = _loom.__version__

_loom._set_error_classes({name: getattr(errors, name) for name in errors.__all__})
_atexit.register(_loom._stop_completions)

_HINTS = ("adaptive", "throughput", "latency")


def usable_cores():
    """Cores this process may use (``sched_getaffinity``: taskset and container limits count)."""
    return _loom.usable_cores()


class Model:
    """One model of an engine: a name requests use, an ONNX file, and the same options as C++'s
    ``ModelConfig`` (each ``None``/``"auto"`` means the engine decides)::

        Model("face", "models/face.onnx", max_batch_size=8, max_queue_delay_us=500,
              queue_capacity=256, default_timeout_us=100_000, instances=None, threads=None,
              backend="ort", weight=1.0, preferred_batch_sizes=[4, 8],
              warmup={"input:0": a_typical_array})

    ``warmup`` is a representative request (copied): the plan measures the model's cost on it and
    every worker runs it once at load. Without it: random values at batch 1, dynamic image dims
    320x320 — pass one for a model whose real inputs are much larger (a 640x480 detector).
    """

    _OPTIONS = ("backend", "instances", "threads", "max_batch_size", "preferred_batch_sizes",
                "max_queue_delay_us", "queue_capacity", "default_timeout_us", "weight", "warmup")

    def __init__(self, name, path, **options):
        unknown = sorted(set(options) - set(self._OPTIONS))
        if unknown:
            raise InvalidArgument(f"unknown model option(s) {unknown}; known: {', '.join(self._OPTIONS)}")
        self.name = name
        self.path = _os.fspath(path)
        self.options = options

    def _dict(self):
        return {"name": self.name, "path": self.path, **self.options}

    def save(self, repository):
        """Writes the model into a ``loom serve --repository`` folder: ``REPOSITORY/NAME/model.onnx``
        (a hard link to :attr:`path` where the file system allows, else a copy) and, when the model
        has options, ``config.yaml`` with them (``warmup`` arrays are not written). Returns the
        model's folder."""
        import json
        import shutil
        folder = _os.path.join(_os.fspath(repository), self.name)
        _os.makedirs(folder, exist_ok=True)
        target = _os.path.join(folder, "model.onnx")
        if _os.path.exists(target):
            _os.unlink(target)
        try:
            _os.link(self.path, target)
        except OSError:
            shutil.copyfile(self.path, target)
        options = {k: v for k, v in self.options.items() if k != "warmup" and v is not None}
        config = _os.path.join(folder, "config.yaml")
        if options:
            with open(config, "w") as f:
                f.write(json.dumps(options) + "\n")  # JSON is YAML
        elif _os.path.exists(config):
            _os.unlink(config)
        return folder

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.options.items()
                        if k != "warmup" or not isinstance(v, dict))
        if isinstance(self.options.get("warmup"), dict):
            extra += ", warmup={" + ", ".join(f"{k!r}: <{getattr(a, 'dtype', '?')} {getattr(a, 'shape', '?')}>"
                                              for k, a in self.options["warmup"].items()) + "}"
        return f"loom.Model({self.name!r}, {self.path!r}{extra})"


def _model_dict(m):
    if isinstance(m, Model):
        return m._dict()
    if isinstance(m, dict):
        return dict(m)
    if isinstance(m, (str, _os.PathLike)):
        path = _os.fspath(m)
        return {"name": _os.path.splitext(_os.path.basename(path))[0], "path": path}
    raise InvalidArgument(f"a model is a loom.Model, a dict or a path, got {type(m).__name__}")


class Engine:
    """Runs several models on this machine's cores, planned so that none is oversubscribed.

    ``Engine(models, hint="adaptive", cores=0, **options)``: ``models`` is a list of
    :class:`Model` (or dicts, or paths). ``hint``: ``"adaptive"`` (default: a lone request runs
    with every core that helps, a full queue on narrow workers), ``"throughput"`` or
    ``"latency"`` (fixed layouts). ``cores``: how many of the usable cores (0: all). Options:
    ``measure_runs``, ``allow_spinning``, ``shared_workers``/``shared_threads`` (a fixed layout),
    ``max_request_bytes``, ``explore_every``.

    Loading measures each model on the cores, so it takes a moment. Use it as a context manager,
    or call :meth:`close`: exiting answers every accepted request first.
    """

    def __init__(self, models, hint="adaptive", cores=0, **options):
        if hint not in _HINTS:
            raise InvalidArgument(f"hint must be one of {', '.join(_HINTS)}, got {hint!r}")
        self._e = _loom._Engine([_model_dict(m) for m in models], hint, int(cores), options)

    @classmethod
    def from_config(cls, path):
        """An engine from a YAML or JSON config file (the format of ``loom`` and pipelines)."""
        engine = cls.__new__(cls)
        engine._e = _loom._Engine.from_config(_os.fspath(path))
        return engine

    # -- requests -------------------------------------------------------------------------------
    def infer(self, model, inputs, deadline_s=None):
        """Runs one request and returns its outputs, ``{name: ndarray}``.

        ``inputs``: ``{input name: ndarray}``, or one array for a single-input model.
        ``deadline_s``: seconds from now after which the request, if it has not started, fails
        with :class:`DeadlineExceeded`. Raises a :class:`loom.Error` subclass on failure.
        """
        return self._e.infer(model, inputs, deadline_s)

    def submit(self, model, inputs, deadline_s=None, block=False):
        """Queues one request; returns a ``concurrent.futures.Future`` of its outputs dict.

        A full queue fails the future with :class:`ResourceExhausted`, unless ``block=True``
        (then this call waits for room, up to the deadline).
        """
        future = _futures.Future()
        future.set_running_or_notify_cancel()
        self._e.submit_callback(model, inputs, deadline_s, block, _resolver(future))
        return future

    def submit_many(self, model, inputs, deadline_s=None):
        """Queues a list of requests (a whole folder at once); returns their futures, in order.
        Waits for room when the queue is full rather than failing."""
        futures = [_futures.Future() for _ in inputs]
        for f in futures:
            f.set_running_or_notify_cancel()
        self._e.submit_many(model, list(inputs), deadline_s, True, [_resolver(f) for f in futures])
        return futures

    def map(self, model, inputs, deadline_s=None, in_flight=None):
        """Like ``Executor.map``: yields each input's outputs dict, in order, as they come.

        ``inputs`` may be any iterable (a generator over a folder too large to hold): at most
        ``in_flight`` requests are queued at a time (default: enough to keep every worker busy and
        to fill its batches), and each answer is released once yielded. The first failure raises
        its :class:`loom.Error` from the iterator; ``deadline_s`` applies to each request.
        """
        if in_flight is None:
            workers = len(self._e.plan_dict()["workers"])
            in_flight = max(2, workers) * 2 * max(1, self._e.max_batch_size(model))
        if in_flight < 1:
            raise InvalidArgument(f"in_flight must be at least 1, got {in_flight}")
        pending = _collections.deque()  # a caller that stops early leaves these to finish unobserved
        for x in inputs:
            pending.append(self.submit(model, x, deadline_s, block=True))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    async def infer_async(self, model, inputs, deadline_s=None):
        """``await``-able :meth:`infer`: resolves on the calling event loop's thread."""
        loop = _asyncio.get_running_loop()
        future = loop.create_future()

        def done(outputs, error):
            loop.call_soon_threadsafe(_settle, future, outputs, error)

        self._e.submit_callback(model, inputs, deadline_s, False, done)
        return await future

    # -- models -----------------------------------------------------------------------------------
    def add_model(self, model):
        """Loads a model while the engine runs (its sessions are made on each worker's cores in
        turn; nothing queued for other models is lost)."""
        self._e.add_model(_model_dict(model))

    def remove_model(self, name):
        """Unloads a model after answering every request it accepted."""
        self._e.remove_model(name)

    @property
    def models(self):
        return list(self._e.models())

    def inputs(self, model):
        """``{input name: (shape, numpy dtype)}``; ``None`` or a name for dynamic dims."""
        return dict(self._e.inputs(model))

    def max_batch_size(self, model):
        """Most rows one request of the model may carry."""
        return self._e.max_batch_size(model)

    # -- the plan and its numbers -------------------------------------------------------------
    @property
    def plan(self):
        """The plan as text: which worker owns which cores, serves which models, and why."""
        return self._e.plan_text()

    @property
    def plan_dict(self):
        """The plan as a dict (workers, wide groups, measured costs, batching, history)."""
        return self._e.plan_dict()

    def stats(self, model):
        """Counters and latency percentiles of a model (requests, successes, failures, ...)."""
        return self._e.stats(model)

    @property
    def max_busy_threads(self):
        """The most threads the engine ever ran at once: never more than the usable cores."""
        return self._e.max_busy_threads()

    def start_trace(self):
        self._e.start_trace()

    def stop_trace(self):
        """Chrome trace-event JSON (Perfetto, chrome://tracing) of the runs since start_trace."""
        return self._e.stop_trace()

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self):
        """Stops accepting requests, answers every accepted one, stops the workers."""
        self._e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        try:
            d = self.plan_dict
            return (f"<loom.Engine models={self.models} hint={d['hint']} cores={d['usable_cores']} "
                    f"workers={len(d['workers'])} wide_groups={len(d['groups'])}>")
        except Error:
            return "<loom.Engine (closed)>"


def _resolver(future):
    def done(outputs, error):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outputs)
    return done


def _settle(future, outputs, error):
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outputs)


class Pipeline:
    """Several models per frame from a YAML pipeline (``pipelines/*.yaml``), on one engine.

    ``Pipeline(path, input=None, output_dir="out", in_flight=None, limit=None, cores=0,
    strategy="loom", sinks=False, models=None, set=None)``. ``models`` replaces model files of the
    YAML by name: ``{"landmarks": loom.from_torch(net, x)}`` (a :class:`Model`, or a path);
    ``set`` replaces node parameters: ``{"det_in.size": 640}``. Records are
    dicts: each node's output (boxes, quads and keypoints as NumPy arrays, texts as strings),
    ``"frame"``, ``"source"``, ``"timings"`` (per node: compute, model wait, core wait in ms) and
    ``"error"`` for a frame that failed.
    """

    def __init__(self, path, input=None, output_dir="out", in_flight=None, limit=None, cores=0,
                 strategy="loom", sinks=False, models=None, set=None):
        import json
        self.path = _os.fspath(path)
        paths = {}
        for name, m in (models or {}).items():
            paths[str(name)] = m.path if isinstance(m, Model) else _os.fspath(m)
        overrides = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (set or {}).items()}
        self._p = _loom._Pipeline(self.path, _os.fspath(input) if input else "", _os.fspath(output_dir),
                                  in_flight, limit, int(cores), strategy, bool(sinks), paths, overrides)

    def run(self, source=None, limit=None, files=None):
        """Runs over the file's source (or ``source``: an image, folder, glob or video; or
        ``files``: a list of image files, in that order) and yields records in frame order while it
        runs."""
        stream = self._p.run(_os.fspath(source) if source else "", limit, [_os.fspath(f) for f in files or []])
        try:
            while True:
                item = stream.next()
                if item is None:
                    return
                yield _record(item)
        finally:
            stream.close()

    def submit(self, frame, name=""):
        """Hands over one frame (an HxWx3 BGR uint8 array, as cv2 gives; gray and BGRA work too);
        returns its index. Waits while ``in_flight`` frames are being processed."""
        return self._p.submit(frame, name)

    def submit_encoded(self, data, name=""):
        """Hands over an encoded image (PNG, JPEG bytes)."""
        return self._p.submit_encoded(bytes(data), name)

    def results(self, wait=False):
        """Yields finished records in frame order: the ready ones (``wait=False``), or every one
        still to come until :meth:`finish` was called and all are out (``wait=True``)."""
        while True:
            item = self._p.next(wait)
            if item is None:
                return
            yield _record(item)

    def next(self, wait=True):
        """The next finished record in frame order; ``None`` when none is ready (``wait=False``),
        or after :meth:`finish` once every record is out."""
        item = self._p.next(wait)
        return None if item is None else _record(item)

    def finish(self):
        """No more frames: ``results(wait=True)`` ends once the last one is out."""
        self._p.finish()

    def bench(self, reps=3, input=None, limit=None):
        """``loom pipeline bench``: sequential loop, thread per model and Loom, as a dict."""
        import json
        return json.loads(self._p.bench(reps, _os.fspath(input) if input else "", limit))

    @property
    def plan(self):
        return self._p.plan_text()

    def __repr__(self):
        return f"<loom.Pipeline {self.path!r} in_flight={self._p.in_flight()}>"


class NodeArg:
    """An input or output of an :class:`InferenceSession`, as onnxruntime describes it."""

    def __init__(self, name, shape, type):
        self.name, self.shape, self.type = name, shape, type

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


class InferenceSession:
    """One plain ONNX Runtime session with its default settings: the subset of onnxruntime's
    ``InferenceSession`` that scripts use, so that a script written for onnxruntime runs on it
    unchanged — the naive baseline, and the first step of a move to :class:`Engine`.

    ``InferenceSession(path, sess_options=None, providers=None, threads=0)``; ``threads=0``
    leaves the intra-op thread count to ONNX Runtime, as onnxruntime does.
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, threads=0, **kwargs):
        if isinstance(path_or_bytes, (bytes, bytearray)):
            raise InvalidArgument("loom.InferenceSession loads a model from a file path, not bytes")
        intra = getattr(sess_options, "intra_op_num_threads", 0) or threads
        self._path = _os.fspath(path_or_bytes)
        self._s = _loom._Session(self._path, int(intra))

    def get_inputs(self):
        return [NodeArg(*t) for t in self._s.inputs()]

    def get_outputs(self):
        return [NodeArg(*t) for t in self._s.outputs()]

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def run(self, output_names, input_feed, run_options=None):
        """Runs the model: ``output_names`` (``None`` for all), ``input_feed`` ``{name: ndarray}``;
        returns the outputs as a list of arrays, in ``output_names`` order."""
        return self._s.run(output_names, input_feed)


def __getattr__(name):
    # loom.bench loads on first use, so that `python3 -m loom.bench` runs it as a fresh module.
    if name == "bench":
        import importlib
        return importlib.import_module(".bench", __name__)
    raise AttributeError(f"module 'loom' has no attribute {name!r}")


__all__ = ["Engine", "Model", "Pipeline", "InferenceSession", "NodeArg", "from_torch", "bench", "errors", "usable_cores", "Error",
           "InvalidArgument", "NotFound", "AlreadyExists", "ResourceExhausted", "DeadlineExceeded", "Unavailable",
           "Cancelled", "FailedPrecondition", "Unimplemented", "PermissionDenied", "Internal"]
