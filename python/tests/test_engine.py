"""The loom Python module on the real models: outputs, errors, memory, threads, asyncio."""
import asyncio
import gc
import os
import random
import threading
import time

import numpy as np
import pytest

import loom
from loom import _loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FACE = os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx")
FRONT = os.path.join(ROOT, "models", "face_detection_front_128x128_barracuda.onnx")
MLSD = os.path.join(ROOT, "models", "mlsd_320x320_tiny.onnx")


@pytest.fixture
def add_model(tmp_path):
    path = str(tmp_path / "add.onnx")
    _loom._write_add_model(path, 0)  # y = x + 1, [batch, width] both dynamic
    return path


@pytest.fixture
def gather_model(tmp_path):
    path = str(tmp_path / "gather.onnx")
    _loom._write_gather_model(path, 10)
    return path


def face_input():
    import cv2
    image = cv2.imread(os.path.join(ROOT, "data", "messi5.jpg"))
    rgb = cv2.cvtColor(cv2.resize(image, (256, 256)), cv2.COLOR_BGR2RGB)
    return ((rgb.astype(np.float32) - 127.5) / 127.5)[None]  # [1,256,256,3] f32


def test_outputs_equal_the_cpp_session_bit_for_bit():
    x = face_input()
    with loom.Engine([loom.Model("face", FACE)], cores=1) as engine:  # one worker, one thread
        got = engine.infer("face", {"input:0": x})
    session = loom.InferenceSession(FACE, threads=1)  # loom::Session, as C++ runs it
    want = session.run(None, {"input:0": x})
    names = [o.name for o in session.get_outputs()]
    assert list(got) == names
    for name, w in zip(names, want):
        assert got[name].dtype == w.dtype and got[name].shape == w.shape
        assert np.array_equal(got[name], w), name
    # The face in messi5.jpg: its anchor's score is well above the rest.
    assert got["Identity:0"].max() > 0


def test_every_error_class_from_a_real_cause(tmp_path, add_model, gather_model):
    assert issubclass(loom.InvalidArgument, ValueError) and issubclass(loom.DeadlineExceeded, TimeoutError)
    slow = loom.Model("slow", add_model, max_batch_size=8, max_queue_delay_us=60_000_000, queue_capacity=1)
    engine = loom.Engine([loom.Model("face", FRONT), slow, loom.Model("gather", gather_model, max_batch_size=1)])
    with pytest.raises(loom.InvalidArgument, match=r"input 'input:0': expected \[1,128,128,3\] f32"):
        engine.infer("face", np.zeros((1, 3, 128, 128), np.float32))
    with pytest.raises(loom.InvalidArgument, match="does not convert without changing its kind"):
        engine.infer("gather", {"index": np.zeros((1, 1), np.float32)})
    with pytest.raises(loom.NotFound, match="no model 'faces' in the engine"):
        engine.infer("faces", np.zeros(1))
    with pytest.raises(loom.DeadlineExceeded):
        engine.infer("face", np.zeros((1, 128, 128, 3), np.float32), deadline_s=-1)
    waiting = engine.submit("slow", np.zeros((1, 4), np.float32))  # waits a minute for company
    with pytest.raises(loom.ResourceExhausted, match="queue is full"):
        engine.submit("slow", np.zeros((1, 4), np.float32)).result()
    with pytest.raises(loom.InvalidArgument, match="out of data bounds"):  # the run fails on the data
        engine.infer("gather", {"index": np.array([[99]], np.int64)})
    with pytest.raises(loom.AlreadyExists):
        engine.add_model(loom.Model("face", FRONT))
    with pytest.raises(loom.InvalidArgument, match="unknown model option"):
        loom.Model("x", FRONT, batch=3)
    with pytest.raises(loom.FailedPrecondition, match="cores"):
        loom.Engine([loom.Model("face", FRONT, instances=64)])
    with pytest.raises(loom.Unimplemented, match="OpenCV DNN cannot load it"):
        loom.Engine([loom.Model("lines", MLSD, backend="opencv")])
    # A model whose output does not follow its declared batch: a batch of two cannot be split.
    pooled = str(tmp_path / "pooled.onnx")
    _loom._write_pooled_model(pooled, 3)
    with loom.Engine([loom.Model("pooled", pooled, max_batch_size=2, preferred_batch_sizes=[2],
                                 max_queue_delay_us=3_600_000_000)], cores=1) as broken:
        pair = [broken.submit("pooled", np.ones((1, 3), np.float32)) for _ in range(2)]
        for f in pair:
            with pytest.raises(loom.Internal, match="does not follow the batch"):
                f.result()
    engine.close()  # runs the waiting request: it was accepted
    assert waiting.result()["y"][0, 0] == 1.0
    with pytest.raises(loom.Unavailable, match="shut down"):
        engine.infer("face", np.zeros((1, 128, 128, 3), np.float32))
    # One table maps every status code: none falls through to a bare RuntimeError.
    for code, name in _loom._status_class_names().items():
        assert hasattr(loom, name), (code, name)


def test_borrowed_inputs_are_read_at_run_time_and_converted_ones_are_copies(add_model):
    # A batch of two: the first request waits (an hour) until the second arrives.
    model = loom.Model("add", add_model, max_batch_size=2, preferred_batch_sizes=[2],
                       max_queue_delay_us=3_600_000_000)
    with loom.Engine([model], cores=1) as engine:
        borrowed = np.zeros((1, 3), np.float32)          # C-contiguous float32: borrowed
        strided = np.zeros((1, 6), np.float32)[:, ::2]   # a view with strides: converted once
        a = engine.submit("add", borrowed)
        b = engine.submit("add", strided)                 # makes the batch; runs now
        out_a, out_b = a.result(), b.result()
    # Documented: a borrowed array must not be written until its answer; writes after it are
    # harmless (outputs are the engine's own buffers), and a converted one was copied at submit.
    assert out_a["y"].tolist() == [[1, 1, 1]] and out_b["y"].tolist() == [[1, 1, 1]]
    borrowed[:] = 100
    assert out_a["y"].tolist() == [[1, 1, 1]]
    assert not out_a["y"].flags.owndata, "outputs are views over the engine's buffers"
    # float64 into a float32 input: the same kind, converted once.
    with loom.Engine([loom.Model("add", add_model)], cores=1) as engine:
        assert engine.infer("add", np.full((2, 2), 0.5))["y"].tolist() == [[1.5, 1.5], [1.5, 1.5]]


def test_threads_and_deadlines_every_future_resolves_exactly_once(add_model, gather_model):
    engine = loom.Engine([loom.Model("add", add_model, queue_capacity=64), loom.Model("gather", gather_model)])
    results = {"ok": 0, "error": 0}
    lock = threading.Lock()
    futures = []

    def client(seed):
        rng = random.Random(seed)
        mine = []
        for i in range(500):
            deadline = rng.choice([None, None, 0.0005, 0.05, -1])
            if rng.random() < 0.5:
                f = engine.submit("add", np.full((1, 4), i, np.float32), deadline_s=deadline, block=rng.random() < 0.5)
            else:
                f = engine.submit("gather", {"index": np.array([[rng.randrange(12)]], np.int64)}, deadline_s=deadline)
            mine.append(f)
        with lock:
            futures.extend(mine)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        try:
            f.result(timeout=60)
            results["ok"] += 1
        except loom.Error:
            results["error"] += 1
    engine.close()
    stats = {m: engine.stats(m) for m in ("add", "gather")}
    answered = sum(s["successes"] + s["failures"] for s in stats.values())
    refused = sum(s["rejected"] for s in stats.values())
    assert sum(s["requests"] for s in stats.values()) == answered
    assert answered + refused == 8 * 500
    assert sum(s["successes"] for s in stats.values()) == results["ok"]
    assert engine.max_busy_threads <= loom.usable_cores()


def test_the_gil_is_released_while_a_request_waits(add_model):
    """A request that waits in the engine (for a partner to fill its batch of 2) lets Python run:
    this thread, which needs the GIL, sees it queued and sends the partner. With the GIL held, this
    thread could not run until the request's deadline (a minute) failed it."""
    model = loom.Model("add", add_model, max_batch_size=2, preferred_batch_sizes=[2],
                       max_queue_delay_us=3_600_000_000)
    with loom.Engine([model], cores=1) as engine:
        first = {}

        def wait_for_a_partner():
            try:
                first["y"] = engine.infer("add", np.ones((1, 4), np.float32), deadline_s=60)["y"]
            except loom.Error as e:
                first["error"] = e
        waiter = threading.Thread(target=wait_for_a_partner)
        waiter.start()
        limit = time.monotonic() + 60
        while engine.stats("add")["queued"] < 1 and waiter.is_alive() and time.monotonic() < limit:
            time.sleep(0.001)  # paces the polling only: the loop ends on the state
        partner = engine.infer("add", np.zeros((1, 4), np.float32))["y"]
        waiter.join()
        assert "error" not in first, first
        assert np.array_equal(first["y"], np.full((1, 4), 2, np.float32))
        assert np.array_equal(partner, np.ones((1, 4), np.float32))
        assert engine.stats("add")["batches"] == 1, "the two ran as one batch"


def test_asyncio_many_concurrent_requests_on_one_loop(add_model):
    with loom.Engine([loom.Model("add", add_model)]) as engine:
        async def main():
            loop_thread = threading.get_ident()
            outs = await asyncio.gather(*[engine.infer_async("add", np.full((1, 2), i, np.float32)) for i in range(200)])
            assert threading.get_ident() == loop_thread
            return outs

        outs = asyncio.run(main())
    assert [o["y"][0, 0] for o in outs] == [i + 1.0 for i in range(200)]


def test_no_leak_over_many_calls(add_model):
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    with loom.Engine([loom.Model("add", add_model)], cores=1) as engine:
        x = np.ones((1, 16), np.float32)
        for _ in range(1000):
            engine.infer("add", x)
        gc.collect()
        first = rss_mb()
        for _ in range(19000):
            engine.infer("add", x)
        futures = engine.submit_many("add", [x] * 2000)
        for f in futures:
            f.result()
        gc.collect()
        grown = rss_mb() - first
    assert grown < 20, f"RSS grew {grown:.1f} MB over 21,000 calls after the first 1,000"


def test_submit_many_keeps_order_and_models_come_and_go(add_model):
    with loom.Engine([loom.Model("face", FRONT)]) as engine:
        engine.add_model(loom.Model("add", add_model))
        futures = engine.submit_many("add", [np.full((1, 1), i, np.float32) for i in range(300)])
        assert [f.result()["y"][0, 0] for f in futures] == [i + 1.0 for i in range(300)]
        assert engine.models == ["face", "add"]
        engine.remove_model("add")
        with pytest.raises(loom.NotFound):
            engine.infer("add", np.zeros((1, 1), np.float32))
        assert "model 'add' removed" in engine.plan
        assert engine.plan_dict["usable_cores"] == loom.usable_cores()


def test_map_yields_in_order_from_a_generator_and_raises_the_first_failure(add_model):
    with loom.Engine([loom.Model("add", add_model, max_batch_size=4)]) as engine:
        inputs = (np.full((1, 1), i, np.float32) for i in range(200))  # never a list
        assert [out["y"][0, 0] for out in engine.map("add", inputs, in_flight=3)] == [i + 1.0 for i in range(200)]
        it = engine.map("add", (np.full((1, 1), i, np.float32) for i in range(50)))
        assert next(it)["y"][0, 0] == 1.0
        it.close()  # stopping early leaves nothing stuck
        bad = [np.zeros((1, 1), np.float32), np.zeros((1, 1, 1), np.float32), np.zeros((1, 1), np.float32)]
        got = engine.map("add", bad)
        assert next(got)["y"][0, 0] == 1.0
        with pytest.raises(loom.InvalidArgument, match="'x'"):
            next(got)
        with pytest.raises(loom.InvalidArgument, match="in_flight"):
            next(engine.map("add", bad, in_flight=0))


def test_a_warmup_request_is_checked_against_the_model(add_model):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = loom.Model("add", add_model, max_batch_size=4, warmup={"x": x})
    assert "warmup={'x': <float32 (3, 4)>}" in repr(model)
    with loom.Engine([model]) as engine:
        np.testing.assert_array_equal(engine.infer("add", x)["y"], x + 1)
    for warmup, culprit in (({"nope": x}, "no input 'nope'"), ({"x": x.astype(np.int64)}, "wrong dtype"),
                            ([x], "is a dict")):
        with pytest.raises(loom.InvalidArgument, match=culprit):
            loom.Engine([loom.Model("add", add_model, max_batch_size=4, warmup=warmup)])


def test_onnxruntime_style_session_runs_a_script_unchanged():
    sess = loom.InferenceSession(MLSD)
    [inp] = sess.get_inputs()
    assert inp.name == "input_image_with_alpha:0" and inp.shape == [1, 320, 320, 4] and inp.type == "tensor(float)"
    assert [o.name for o in sess.get_outputs()] == ["offsets", "scores"]
    scores, = sess.run(["scores"], {inp.name: np.zeros(inp.shape, np.float32)})
    assert scores.shape == (1, 160, 160, 1)
    with pytest.raises(loom.InvalidArgument, match="has no output 'nope'"):
        sess.run(["nope"], {inp.name: np.zeros(inp.shape, np.float32)})


def test_help_tells_a_newcomer_what_to_do():
    assert "Basic usage" in loom.__doc__
    assert "hint" in loom.Engine.__doc__ and "submit" in dir(loom.Engine)
    assert loom.Engine.infer.__doc__ and loom.Pipeline.run.__doc__
    assert os.path.exists(os.path.join(os.path.dirname(loom.__file__), "__init__.pyi"))


def test_python_overhead_bench_reports_both_sides():
    import loom.bench
    r = loom.bench.python_overhead(runs=50, reps=1)  # figures are not asserted: speed lives in the bench
    assert r["cpp_infer_p50_us"] > 0 and r["python_infer_p50_us"] > 0
    assert (r["runs"], r["reps"]) == (50, 1) and set(r) == {
        "runs", "reps", "cpp_infer_p50_us", "python_infer_p50_us", "python_overhead_p50_us"}
