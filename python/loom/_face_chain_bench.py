"""``python3 -m loom.bench face-chain``: the face chain as its authors run it, beside Loom.

The chain: BlazeFace finds the faces of a frame; for every face, a landmark model (MobileNet_GDConv,
PyTorch) places 68 points; the eyebrows' points place a brow crop whose Sobel edge map a classifier
(MobileNetV3-Small, PyTorch) labels frown or normal. Every strategy runs it over the same decoded
frames (decoding is left out of every timing), repetitions interleaved (A B C ... A B C ...), one
untimed round first; the figures are medians.

Strategies:
  torch-eager             the authors' loop: one frame and one face at a time, the two torch models
                          as ``nn.Module``s in eager mode, with the BLAS Debian installs (the
                          reference BLAS, through /usr/lib/.../libblas.so.3)
  torch-eager-openblas    the same loop with OpenBLAS selected (a process of its own whose
                          LD_LIBRARY_PATH puts OpenBLAS's libblas.so.3 first; nothing system-wide)
  data-parallel           the same with the models wrapped in ``nn.DataParallel`` (OpenBLAS): on a
                          machine without a GPU it has no devices and just calls the module
  torchscript             the strongest torch option: ``torch.jit.trace`` + ``freeze`` +
                          ``optimize_for_inference`` (OpenBLAS)
  onnx-sequential         one ONNX Runtime session per model, default options, one after another
                          (``loom.InferenceSession``: what ``onnxruntime.InferenceSession`` gives)
  thread-per-model        the same sessions, each model on its own thread, frames pipelined
  loom                    ``loom.Pipeline("pipelines/face-chain.yaml")``, frames submitted
The detector has no PyTorch weights: every strategy runs the trained BlazeFace as ONNX, decoded by
the same code (Loom's), so only the way the three models run differs. Torch runs with its
intra-op threads set to the usable cores (its own default on this kind of machine is one thread).

The ideal: the three models' single-thread cost per frame (each run timed alone on a one-thread
session over the same frames and faces, in every round) spread over the usable cores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import queue

import numpy as np

from . import _loom
from .bench import _write_json
from ._torch import blas_in_use

_ROOT = _loom._source_dir
# Debian's libblas.so.3 implementations: python3-torch pulls in the reference BLAS (libblas3);
# libopenblas0 adds OpenBLAS, and update-alternatives then prefers it system-wide. Each torch
# process puts the one it wants first on its library path, whatever the system's choice.
_BLAS_DIRS = {"reference": "/usr/lib/x86_64-linux-gnu/blas", "openblas": "/usr/lib/x86_64-linux-gnu/openblas-pthread"}
_DETECTOR = "models/face_detection_back_256x256_barracuda.onnx"
_LANDMARKS = "models/seeded_landmarks_gdconv"
_FROWN = "models/seeded_frown_mnv3small"
STRATEGIES = ("torch-eager", "torch-eager-openblas", "data-parallel", "torchscript", "onnx-sequential",
              "thread-per-model", "loom")
_TORCH = {"torch-eager": ("reference", "eager"), "torch-eager-openblas": ("openblas", "eager"),
          "data-parallel": ("openblas", "data-parallel"), "torchscript": ("openblas", "torchscript")}


def _path(relative):
    return relative if os.path.isabs(relative) else os.path.join(_ROOT, relative)


def usable_cores():
    return len(os.sched_getaffinity(0))


def physical_cores():
    """Distinct physical cores among the usable ones (what ONNX Runtime sizes its default pool by)."""
    seen = set()
    for cpu in os.sched_getaffinity(0):
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                seen.add(f.read().strip())
        except OSError:
            seen.add(str(cpu))
    return max(1, len(seen))


# -- the chain, one frame at a time, as its authors write it --------------------------------------
class Detector:
    """BlazeFace (back, 256x256) on an ONNX Runtime session, decoded by Loom's decoder."""

    def __init__(self, threads=0):
        import loom
        self.session = loom.InferenceSession(_path(_DETECTOR), threads=threads)
        self.name = self.session.get_inputs()[0].name

    def input(self, frame):
        import cv2
        rgb = cv2.cvtColor(cv2.resize(frame, (256, 256), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        return ((rgb.astype(np.float32) - 127.5) * 0.0078431)[None]  # [1,256,256,3] in [-1, 1]

    def decode(self, outputs, frame):
        h, w = frame.shape[:2]
        return _loom._blazeface_decode(list(outputs), 256, 0.5, 0.3, float(w), float(h))

    def __call__(self, frame):
        return self.decode(self.session.run(None, {self.name: self.input(frame)}), frame)


def chain_frame(frame, faces, landmarks, frown):
    """One frame's faces through the landmark and frown models (``landmarks``/``frown``: batch ->
    array), one face at a time; returns each face's label (0 normal, 1 frown)."""
    from . import seed_models as sm
    labels = []
    for box, _score, _keypoints in faces:
        crop, (x0, y0) = sm.face_crop(frame, box)
        out = landmarks(sm.landmark_input([crop]))
        points = sm.landmarks_to_image(out, [(x0, y0)], [(crop.shape[1], crop.shape[0])])[0]
        brow, _ = sm.brow_crop(frame, box, points)
        labels.append(int(np.argmax(frown(sm.frown_input([brow]))[0])))
    return labels


def ort_runner(path, threads=0):
    import loom
    session = loom.InferenceSession(_path(path + ".onnx"), threads=threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


# -- torch, in a process per BLAS ---------------------------------------------------------------
def _torch_models(mode, threads):
    import torch
    from . import seed_models as sm
    torch.set_num_threads(threads)
    nets = []
    for path, make, size in ((_LANDMARKS, lambda: sm.MobileNet_GDConv(136), sm.LANDMARK_INPUT),
                             (_FROWN, lambda: sm.MobileNetV3_Small(2), sm.FROWN_INPUT)):
        if not os.path.exists(_path(path + ".pt")):
            raise FileNotFoundError(f"{path}.pt is missing: run scripts/seed_models (scripts/setup does)")
        net = make()
        net.load_state_dict(torch.load(_path(path + ".pt")))
        net.eval()
        if mode == "data-parallel":
            net = torch.nn.DataParallel(net)
        elif mode == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(net, torch.zeros(1, 3, size, size))
                net = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        nets.append(net)

    def runner(net):
        def run(x):
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()
        return run
    return [runner(n) for n in nets]


def _worker(frames_path, threads):
    """The torch side: reads a mode per line on stdin, runs the chain over the frames, answers
    {"seconds", "labels", "blas", "threads"} per line on stdout."""
    import torch
    frames = np.load(frames_path, mmap_mode="r")
    detector = Detector()
    faces = [detector(np.asarray(f)) for f in frames]
    cache = {}
    for line in sys.stdin:
        mode = line.strip()
        if not mode:
            continue
        try:
            if mode not in cache:
                cache[mode] = _torch_models(mode, threads)
            landmarks, frown = cache[mode]
            labels = []
            start = time.perf_counter()
            for frame in frames:
                frame = np.asarray(frame)
                labels.append(chain_frame(frame, detector(frame), landmarks, frown))
            seconds = time.perf_counter() - start
            answer = {"seconds": seconds, "labels": labels, "blas": blas_in_use(), "threads": torch.get_num_threads(),
                      "faces": sum(len(f) for f in faces)}
        except Exception as e:  # the parent reports it; the worker goes on
            answer = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


class TorchProcess:
    """A worker process for one BLAS: torch loaded once, models built once per mode."""

    def __init__(self, blas, frames_path, threads):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if os.path.isdir(_BLAS_DIRS[blas]):
            env["LD_LIBRARY_PATH"] = _BLAS_DIRS[blas] + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                         env.get("PYTHONPATH", "")] if p)
        self.process = subprocess.Popen([sys.executable, "-m", "loom._face_chain_bench", "--worker", frames_path,
                                         str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=env)

    def run(self, mode):
        self.process.stdin.write(mode + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the torch worker for {mode} ended (exit {self.process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"torch {mode}: {answer['error']}")
        return answer

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


# -- the ONNX Runtime strategies and Loom, in this process ----------------------------------------
def run_onnx_sequential(frames, state):
    labels = []
    start = time.perf_counter()
    for frame in frames:
        labels.append(chain_frame(frame, state["detector"](frame), state["landmarks"], state["frown"]))
    return time.perf_counter() - start, labels


def run_thread_per_model(frames, state):
    """A thread per model, each with its own session, frames flowing through queues."""
    from . import seed_models as sm
    detected, landmarked = queue.Queue(8), queue.Queue(8)
    labels = [None] * len(frames)
    errors = []

    def detect():
        try:
            for i, frame in enumerate(frames):
                detected.put((i, frame, state["detector"](frame)))
        except Exception as e:
            errors.append(e)
        detected.put(None)

    def landmark():
        try:
            while (item := detected.get()) is not None:
                i, frame, faces = item
                brows = []
                for box, _s, _k in faces:
                    crop, (x0, y0) = sm.face_crop(frame, box)
                    out = state["landmarks"](sm.landmark_input([crop]))
                    points = sm.landmarks_to_image(out, [(x0, y0)], [(crop.shape[1], crop.shape[0])])[0]
                    brows.append(sm.brow_crop(frame, box, points)[0])
                landmarked.put((i, brows))
        except Exception as e:
            errors.append(e)
        landmarked.put(None)

    def classify():
        try:
            while (item := landmarked.get()) is not None:
                i, brows = item
                labels[i] = [int(np.argmax(state["frown"](sm.frown_input([b]))[0])) for b in brows]
        except Exception as e:
            errors.append(e)

    start = time.perf_counter()
    threads = [threading.Thread(target=f) for f in (detect, landmark, classify)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start, labels


def run_loom(frames, state):
    pipeline = state["pipeline"]
    labels = []
    start = time.perf_counter()

    def take(records):
        for r in records:
            if "error" in r:
                raise RuntimeError(f"loom: frame {r['frame']}: {r['error']}")
            labels.append([1 if f["label"] == "frown" else 0 for f in r.get("faces", [])])

    for i, frame in enumerate(frames):
        pipeline.submit(frame, f"frame#{i}")
        take(pipeline.results(wait=False))
    # Every frame submitted: wait for the rest (the pipeline serves every round, so it is never
    # finished: count the records instead).
    while len(labels) < len(frames):
        take([pipeline.next(wait=True)])
    return time.perf_counter() - start, labels


def ideal_pass(frames, faces, single, cpu=None):
    """ms per frame of the three models on one-thread sessions: every detector run, and the
    landmark and frown runs of every face, each timed alone (inputs prepared beforehand)."""
    from . import seed_models as sm
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # this thread only (Linux)
    total = 0.0
    for frame, frame_faces in zip(frames, faces):
        x = single["detector"].input(frame)
        t = time.perf_counter()
        single["detector"].session.run(None, {single["detector"].name: x})
        total += time.perf_counter() - t
        for box, _s, _k in frame_faces:
            crop, (x0, y0) = sm.face_crop(frame, box)
            xl = sm.landmark_input([crop])
            t = time.perf_counter()
            out = single["landmarks"](xl)
            total += time.perf_counter() - t
            points = sm.landmarks_to_image(out, [(x0, y0)], [(crop.shape[1], crop.shape[0])])[0]
            xf = sm.frown_input([sm.brow_crop(frame, box, points)[0]])
            t = time.perf_counter()
            single["frown"](xf)
            total += time.perf_counter() - t
    return 1000.0 * total / len(frames)


def busy_ideal_pass(frames, faces, cores):
    """The same on every usable core at once (a one-thread session set per core, each thread
    pinned to its core): what the cores give when all compute. The mean over the cores."""
    results = [None] * len(cores)

    def one(i, cpu):
        single = {"detector": Detector(threads=1), "landmarks": ort_runner(_LANDMARKS, 1),
                  "frown": ort_runner(_FROWN, 1)}
        results[i] = ideal_pass(frames, faces, single, cpu)

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(cores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statistics.mean(results)


# -- the report ---------------------------------------------------------------------------------
def _why(name, info, cores, ort_threads, ideal_ms, ms):
    share = ideal_ms / ms if ms > 0 else 0
    busy = f"it keeps {share:.2f} of {cores} cores' worth of single-thread model work going"
    if name in _TORCH:
        mode = {"eager": "eager nn.Modules", "data-parallel": "nn.DataParallel (no GPU: it calls the module)",
                "torchscript": "TorchScript (traced, frozen, optimized for inference)"}[_TORCH[name][1]]
        return (f"one frame and one face at a time, {mode} on {info.get('threads', '?')} intra-op threads with "
                f"{info.get('blas', '?')}, the detector's session beside them: a batch of one 224x224 image does not "
                f"spread over {cores} cores, and the models never overlap; {busy}")
    if name == "onnx-sequential":
        return (f"3 sessions one after another, each on ONNX Runtime's default intra-op threads ({ort_threads}): one "
                f"model at a time; {busy}")
    if name == "thread-per-model":
        return (f"3 sessions x {ort_threads} intra-op threads on {cores} cores, one thread per model: the stages wait "
                f"on each other (the landmark stage carries most of the work), so cores idle or are oversubscribed; "
                f"{busy}")
    return f"the plan's workers on disjoint cores, every face of a frame fanned out at once; {busy}"


def run(video="data/Megamind.avi", frames=48, reps=3, strategies=None, cores=0, progress=None):
    """Runs the benchmark; returns the report dict (see the module's doc)."""
    import cv2
    import loom
    strategies = list(strategies or STRATEGIES)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise loom.InvalidArgument(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    usable = sorted(os.sched_getaffinity(0))
    cores = cores or len(usable)
    if cores > len(usable):
        raise loom.InvalidArgument(f"cores={cores}, but this process may use {len(usable)}")
    cpus = usable[:cores]
    capture = cv2.VideoCapture(_path(video))
    decoded = []
    while len(decoded) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    if not decoded:
        raise loom.InvalidArgument(f"no frame could be decoded from {video}")
    ort_threads = physical_cores()
    state = {"detector": Detector(), "landmarks": ort_runner(_LANDMARKS), "frown": ort_runner(_FROWN)}
    single = {"detector": Detector(threads=1), "landmarks": ort_runner(_LANDMARKS, 1), "frown": ort_runner(_FROWN, 1)}
    faces = [state["detector"](f) for f in decoded]
    if "loom" in strategies:
        state["pipeline"] = loom.Pipeline(_path("pipelines/face-chain.yaml"), cores=cores)
    workers = {}
    tmp = tempfile.TemporaryDirectory(prefix="loom-face-chain-")
    try:
        frames_path = os.path.join(tmp.name, "frames.npy")
        np.save(frames_path, np.stack(decoded))
        for s in strategies:
            if s in _TORCH and _TORCH[s][0] not in workers:
                workers[_TORCH[s][0]] = TorchProcess(_TORCH[s][0], frames_path, cores)
        seconds = {s: [] for s in strategies}
        info, labels = {}, {}
        ideal, busy = [], []
        for rep in range(reps + 1):  # round 0 warms every strategy up
            for s in strategies:
                if progress:
                    progress(rep, s)
                if s in _TORCH:
                    answer = workers[_TORCH[s][0]].run(_TORCH[s][1])
                    t, out = answer["seconds"], answer["labels"]
                    info[s] = answer
                else:
                    t, out = {"onnx-sequential": run_onnx_sequential, "thread-per-model": run_thread_per_model,
                              "loom": run_loom}[s](decoded, state)
                labels[s] = out
                if rep > 0:
                    seconds[s].append(t)
            if progress:
                progress(rep, "ideal")
            ideal_ms = ideal_pass(decoded, faces, single)
            busy_ms = busy_ideal_pass(decoded, faces, cpus)
            if rep > 0:
                ideal.append(ideal_ms)
                busy.append(busy_ms)
    finally:
        for w in workers.values():
            w.close()
        tmp.cleanup()
    n = len(decoded)
    ideal_ms = statistics.median(ideal)
    busy_ms = statistics.median(busy)
    report = {"video": video, "frames": n, "faces": sum(len(f) for f in faces), "repetitions": reps, "cores": cores,
              "ort_default_threads": ort_threads, "ideal_ms_per_frame": ideal_ms, "ideal_fps": cores * 1000.0 / ideal_ms,
              "busy_ideal_ms_per_frame": busy_ms, "busy_ideal_fps": cores * 1000.0 / busy_ms,
              "ideal_ms_runs": ideal, "busy_ideal_ms_runs": busy, "strategies": []}
    reference = labels.get("loom")
    for s in strategies:
        fps_runs = [n / t for t in seconds[s]]
        fps = statistics.median(fps_runs)
        row = {"strategy": s, "fps": fps, "fps_runs": fps_runs, "ms_per_frame": 1000.0 / fps,
               "why": _why(s, info.get(s, {}), cores, ort_threads, ideal_ms, 1000.0 / fps)}
        if s in info:
            row.update({"blas": info[s]["blas"], "torch_threads": info[s]["threads"]})
        if reference is not None:
            flat = [x for f in labels[s] for x in f]
            ref = [x for f in reference for x in f]
            row["faces"] = len(flat)
            row["same_labels_as_loom"] = (sum(a == b for a, b in zip(flat, ref)) / len(ref)) if ref and \
                len(flat) == len(ref) else None
        report["strategies"].append(row)
    if "loom" in strategies:
        loom_fps = next(r["fps"] for r in report["strategies"] if r["strategy"] == "loom")
        loom_runs = next(r["fps_runs"] for r in report["strategies"] if r["strategy"] == "loom")
        report["of_ideal_runs"] = [f * i / (cores * 1000.0) for f, i in zip(loom_runs, ideal)]
        report["of_busy_ideal_runs"] = [f * b / (cores * 1000.0) for f, b in zip(loom_runs, busy)]
        report["of_ideal"] = statistics.median(report["of_ideal_runs"])
        report["of_busy_ideal"] = statistics.median(report["of_busy_ideal_runs"])
        ratios = ", ".join(f"{loom_fps / r['fps']:.2f}x {r['strategy']}" for r in report["strategies"]
                           if r["strategy"] != "loom")
        report["verdict"] = (f"verdict: loom = {ratios}; {report['of_ideal']:.2f} of ideal ({report['of_busy_ideal']:.2f} "
                             f"of the ideal at costs measured with every core busy) (medians of each round's ratio)")
        report["plan"] = state["pipeline"].plan
    return report


def table(report):
    lines = [f"face chain on {report['video']}: {report['frames']} frames, {report['faces']} faces, "
             f"{report['repetitions']} repetitions interleaved, medians; {report['cores']} cores", "",
             f"{'strategy':<22} {'frames/s':>9} {'ms/frame':>9} {'loom is':>8}  same labels as loom"]
    loom = next((r["fps"] for r in report["strategies"] if r["strategy"] == "loom"), None)
    for r in report["strategies"]:
        ratio = f"{loom / r['fps']:.2f}x" if loom and r["strategy"] != "loom" else ""
        same = r.get("same_labels_as_loom")
        lines.append(f"{r['strategy']:<22} {r['fps']:>9.2f} {r['ms_per_frame']:>9.1f} {ratio:>8}  "
                     f"{'' if same is None else f'{100 * same:.0f}%'}")
    lines.append(f"{'ideal':<22} {report['ideal_fps']:>9.2f} {1000 / report['ideal_fps']:>9.1f}           (the models' "
                 f"single-thread cost, {report['ideal_ms_per_frame']:.1f} ms per frame on one core, / "
                 f"{report['cores']} cores)")
    lines.append(f"{'ideal, busy cores':<22} {report['busy_ideal_fps']:>9.2f} {1000 / report['busy_ideal_fps']:>9.1f}"
                 f"           (the same measured on every core at once: {report['busy_ideal_ms_per_frame']:.1f} ms)")
    if "of_ideal_runs" in report:
        lines.append("loom of ideal          " + " ".join(f"{x:.2f}" for x in report["of_ideal_runs"]) +
                     f"  (each round's; median {report['of_ideal']:.2f})")
    lines += ["", "why each runs as it does:"]
    for r in report["strategies"]:
        lines.append(f"  {r['strategy']}: {r['why']}")
    lines += ["", "The detector is the trained BlazeFace (ONNX) in every strategy; the landmark and frown models are "
              "seeded (for timing: their answers mean nothing). Decoding is left out of every timing."]
    if "verdict" in report:
        lines += ["", report["verdict"]]
    return "\n".join(lines) + "\n"


def html(report):
    labels = [r["strategy"] for r in report["strategies"]]
    chart = _loom._bar_chart(
        "Frames per second per strategy (face chain)",
        f"{report['frames']} frames of {report['video']}, {report['faces']} faces; bars: the median of "
        f"{report['repetitions']} repetitions; dots: each repetition. The dashed line is the ideal.",
        "frames/s", labels, [r["fps"] for r in report["strategies"]], [r["fps_runs"] for r in report["strategies"]],
        report["ideal_fps"], f"ideal: the models' single-thread cost per frame "
                             f"({report['ideal_ms_per_frame']:.1f} ms) over {report['cores']} cores")
    return _loom._render_html("python3 -m loom.bench face-chain", report.get("verdict", ""), table(report),
                              report.get("plan", ""), [chart])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m loom.bench face-chain", description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="data/Megamind.avi")
    parser.add_argument("--frames", type=int, default=48, help="frames of the video (default 48)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (default 3)")
    parser.add_argument("--cores", type=int, default=0, help="cores for Loom, torch and the ideal (0: all usable)")
    parser.add_argument("--strategies", help=f"comma-separated, of: {','.join(STRATEGIES)}")
    parser.add_argument("--json", help="write the report as JSON to FILE (- for stdout)")
    parser.add_argument("--html", help="write a self-contained HTML report to FILE")
    parser.add_argument("--quick", action="store_true", help="6 frames, 1 repetition (a smoke test)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.reps < 1:
        parser.error("--frames and --reps must be at least 1")
    if args.quick:
        args.frames, args.reps = 6, 1
    strategies = args.strategies.split(",") if args.strategies else None

    def progress(rep, strategy):
        print(f"\rround {rep}/{args.reps}  {strategy:<22}", end="", file=sys.stderr, flush=True)

    report = run(args.video, args.frames, args.reps, strategies, args.cores, progress)
    print(file=sys.stderr)
    if args.json != "-":
        print(table(report), end="")
    if args.json:
        _write_json(report, args.json)
    if args.html:
        with open(args.html, "w") as f:
            f.write(html(report))
        print(f"report: {args.html}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main())
