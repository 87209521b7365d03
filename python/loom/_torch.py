"""``loom.from_torch``: a ``torch.nn.Module`` as a :class:`loom.Model`, through ONNX.

Only this module imports torch (and only when ``from_torch`` is called): ``import loom`` never
does.
"""
import hashlib
import json
import os
import tempfile

from .errors import FailedPrecondition, InvalidArgument

# Exports are compared with torch eager on the example inputs: the largest difference must stay
# within this fraction of the output's range (max - min).
AGREEMENT = 1e-4
_FORMAT = 1  # bump when the cache's file layout or the hashed fields change


def default_cache_dir():
    """``$LOOM_CACHE_DIR/torch``, else ``$XDG_CACHE_HOME/loom/torch``, else ``~/.cache/loom/torch``."""
    if os.environ.get("LOOM_CACHE_DIR"):
        return os.path.join(os.environ["LOOM_CACHE_DIR"], "torch")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "loom", "torch")


def _as_tuple(example_inputs, torch):
    if isinstance(example_inputs, (list, tuple)):
        items = list(example_inputs)
    else:
        items = [example_inputs]
    out = []
    for i, x in enumerate(items):
        if isinstance(x, torch.Tensor):
            out.append(x.detach())
            continue
        try:
            import numpy as np
            if isinstance(x, np.ndarray):
                out.append(torch.from_numpy(np.ascontiguousarray(x)))
                continue
        except ImportError:  # pragma: no cover - numpy is a dependency of loom
            pass
        raise InvalidArgument(f"example input {i} is a {type(x).__name__}; from_torch takes torch tensors or "
                              "NumPy arrays (one, or a tuple of them)")
    if not out:
        raise InvalidArgument("from_torch needs at least one example input")
    return tuple(out)


def _names(given, count, stem, what):
    if given is None:
        return [stem] if count == 1 else [f"{stem}{i}" for i in range(count)]
    given = list(given)
    if len(given) != count:
        raise InvalidArgument(f"{what}: {len(given)} names given for {count} {what.split('_')[0]}s: {given}")
    if len(set(given)) != count or not all(isinstance(n, str) and n for n in given):
        raise InvalidArgument(f"{what} must be distinct non-empty strings, got {given}")
    return given


def _outputs_of(result, torch):
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, torch.Tensor) for r in result):
        return list(result)
    raise InvalidArgument(f"the module returns a {type(result).__name__}; from_torch exports modules that return a "
                          "tensor or a tuple of tensors")


def blas_in_use():
    """Which libblas.so.3 this process loaded, from its memory maps: 'OpenBLAS', 'reference BLAS'
    (Debian's libblas3) or 'unknown'. Debian's torch reaches its BLAS through that library, which
    update-alternatives (or LD_LIBRARY_PATH) chooses."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if line.rstrip().endswith("libblas.so.3") or "libblas.so.3." in line}
    except OSError:
        return "unknown"
    real = {os.path.realpath(p) for p in paths}
    if any("openblas" in p for p in real):
        return "OpenBLAS"
    return "reference BLAS" if real else "unknown"


def _fingerprint(module, args, export, torch):
    """A hash of everything the exported file depends on: the weights and buffers, the module's
    structure, the example inputs' shapes and dtypes, the export arguments and torch's version."""
    h = hashlib.sha256()
    header = {"format": _FORMAT, "torch": torch.__version__, "class": type(module).__qualname__,
              "structure": repr(module), "inputs": [[list(a.shape), str(a.dtype)] for a in args], **export}
    h.update(json.dumps(header, sort_keys=True).encode())
    for key, value in module.state_dict(keep_vars=False).items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def weights_digest(module):
    """The sha256 of a module's weights and buffers alone (names, dtypes, shapes, values)."""
    import torch  # noqa: F401  (the caller has torch: it made the module)
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _agreement(path, module, args, input_names, output_names, torch):
    """Runs the export (ONNX Runtime, through loom.InferenceSession) and torch eager on the same
    inputs; returns per output (name, max |difference|, output range)."""
    from . import InferenceSession
    with torch.no_grad():
        expected = [o.detach().cpu().numpy() for o in _outputs_of(module(*args), torch)]
    session = InferenceSession(path, threads=1)
    got = session.run(output_names, {n: a.cpu().numpy() for n, a in zip(input_names, args)})
    report = []
    for name, e, g in zip(output_names, expected, got):
        if e.shape != g.shape:
            raise FailedPrecondition(f"export of output '{name}' has shape {list(g.shape)}, torch gives "
                                     f"{list(e.shape)}")
        diff = float(abs(e.astype("float64") - g.astype("float64")).max()) if e.size else 0.0
        span = float(e.max() - e.min()) if e.size else 0.0
        report.append((name, diff, span))
    return report


def from_torch(module, example_inputs, *, name=None, input_names=None, output_names=None, dynamic_batch=True,
               opset=17, cache_dir=None, dynamic_axes=None, check=True, **model_options):
    """Exports a ``torch.nn.Module`` to ONNX (once) and returns a :class:`loom.Model` of it.

    ``example_inputs``: a tensor (or NumPy array), or a tuple of them, of the shapes the model
    takes. The export runs in eval mode without gradients (the module's mode is restored) with
    ``torch.onnx.export`` at ``opset``; dim 0 of every input and output is dynamic unless
    ``dynamic_batch=False``; ``dynamic_axes`` (torch's format: ``{name: {axis: "label"}}``) adds
    more (e.g. a detector's height and width). Names default to ``input`` / ``input0…`` and
    ``output`` / ``output0…``.

    The file is cached in ``cache_dir`` (default :func:`default_cache_dir`) under a hash of the
    weights, the module's structure, the example shapes and the export arguments: a second call
    with the same module does not export again. A new export is checked with ``onnx.checker``,
    loaded by ONNX Runtime and compared with torch eager on the example inputs (``check``): the
    largest difference must be within ``1e-4`` of each output's range, or the export is refused.

    ``model_options`` go to :class:`loom.Model` (``max_batch_size``, ``instances``, ...). Errors:
    :class:`loom.InvalidArgument` for what cannot export (with the exporter's message and the
    module's class), :class:`loom.FailedPrecondition` for an export that disagrees with torch.
    """
    import torch
    from . import Model

    if not isinstance(module, torch.nn.Module):
        raise InvalidArgument(f"from_torch takes a torch.nn.Module, got a {type(module).__name__}")
    cls = type(module).__qualname__
    if not isinstance(opset, int) or not 7 <= opset <= 17:
        raise InvalidArgument(f"opset must be an integer in [7, 17] (torch {torch.__version__}), got {opset!r}")
    args = _as_tuple(example_inputs, torch)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            try:
                outputs = _outputs_of(module(*args), torch)
            except InvalidArgument:
                raise
            except Exception as e:
                raise InvalidArgument(f"{cls} cannot run on the example inputs "
                                      f"{[list(a.shape) for a in args]}: {type(e).__name__}: {e}") from e
        input_names = _names(input_names, len(args), "input", "input_names")
        output_names = _names(output_names, len(outputs), "output", "output_names")
        axes = {}
        if dynamic_batch:
            for n in input_names + output_names:
                axes[n] = {0: "batch"}
        for n, extra in (dynamic_axes or {}).items():
            if n not in input_names + output_names:
                raise InvalidArgument(f"dynamic_axes names '{n}', which is not an input or output "
                                      f"({', '.join(input_names + output_names)})")
            axes.setdefault(n, {}).update({int(k): str(v) for k, v in dict(extra).items()})
        name = name or cls
        export = {"opset": opset, "input_names": input_names, "output_names": output_names,
                  "dynamic_axes": {k: {str(a): v for a, v in d.items()} for k, d in axes.items()}}
        digest = _fingerprint(module, args, export, torch)
        folder = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        os.makedirs(folder, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = os.path.join(folder, f"{safe}-{digest[:16]}.onnx")
        meta_path = path[:-5] + ".json"
        exported = False
        if not (os.path.exists(path) and _meta_matches(meta_path, digest)):
            _export(module, args, path, meta_path, digest, export, axes, cls, check, torch)
            exported = True
    finally:
        module.train(was_training)
    model = Model(name, path, **model_options)
    model.exported = exported  # False: the cached file was used
    model.digest = digest
    return model


def _meta_matches(meta_path, digest):
    try:
        with open(meta_path) as f:
            return json.load(f).get("digest") == digest
    except (OSError, ValueError):
        return False


def _export(module, args, path, meta_path, digest, export, axes, cls, check, torch):
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        try:
            with torch.no_grad():
                torch.onnx.export(module, args, tmp, opset_version=export["opset"],
                                  input_names=export["input_names"], output_names=export["output_names"],
                                  dynamic_axes=axes or None, do_constant_folding=True)
        except Exception as e:
            raise InvalidArgument(f"{cls} cannot be exported to ONNX (opset {export['opset']}): "
                                  f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from e
        try:
            import onnx
            onnx.checker.check_model(tmp, full_check=True)
        except ImportError:
            pass  # ONNX Runtime's load below still checks the graph
        except Exception as e:
            raise FailedPrecondition(f"the ONNX export of {cls} fails onnx.checker: {e}") from e
        report = []
        if check:
            for out, diff, span in _agreement(tmp, module, args, export["input_names"], export["output_names"], torch):
                limit = AGREEMENT * (span if span > 0 else 1.0)
                if not diff <= limit:
                    raise FailedPrecondition(f"the ONNX export of {cls} disagrees with torch on output '{out}': "
                                             f"max |difference| {diff:.3g} > {AGREEMENT:g} x range {span:.3g}")
                report.append({"output": out, "max_abs_diff": diff, "range": span})
        os.replace(tmp, path)
        tmp = None
        meta = {"digest": digest, "class": cls, "torch": torch.__version__, **export, "agreement": report}
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(meta_path + ".tmp", meta_path)
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
