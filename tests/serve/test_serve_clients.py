"""`loom serve` from the outside: a real server process, driven by clients that share no code with
it — curl, python3-requests, python3-grpcio with stubs generated from the project's .proto by
protoc, and python3-prometheus-client's parser for /metrics. Also: SIGTERM drains under 32
clients, and a bounded load run (64 clients) whose RSS must not grow. Every wait is for a
condition (answers seen, a state reached), never for a length of time.

Environment: LOOM_BINARY (the loom executable), LOOM_SOURCE_DIR (the repository),
LOOM_LOAD_REQUESTS (answers the load run measures RSS over, default 5,000; scripts/load_serve
runs 50,000).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from loom import _loom  # noqa: E402  (only to write the tiny Add model; the clients are independent)

ROOT = os.environ.get("LOOM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("LOOM_BINARY", os.path.join(ROOT, "build", "loom"))
FACE = os.path.join(ROOT, "models", "face_detection_front_128x128_barracuda.onnx")
FACE_BACK = os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx")
MESSI = os.path.join(ROOT, "data", "messi5.jpg")
ADMIN_TOKEN = "admin-test-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The protocol's stubs, generated here from src/serve/grpc_service.proto."""
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run(["protoc", f"--proto_path={ROOT}/src/serve", f"--python_out={out}", f"--grpc_out={out}",
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                    f"{ROOT}/src/serve/grpc_service.proto"], check=True)
    sys.path.insert(0, str(out))
    import grpc_service_pb2
    import grpc_service_pb2_grpc
    return grpc_service_pb2, grpc_service_pb2_grpc


def make_repository(root):
    """add/ (a model folder with a config), face/ (a bare .onnx), faces/ (a pipeline)."""
    (root / "add").mkdir(parents=True)
    _loom._write_add_model(str(root / "add" / "model.onnx"), 4)
    (root / "add" / "config.yaml").write_text("max_batch_size: 8\nmax_queue_delay_us: 200\n")
    (root / "face").mkdir()
    os.symlink(FACE, root / "face" / "model.onnx")
    (root / "faces").mkdir()
    (root / "faces" / "pipeline.yaml").write_text(f"""
models:
  - {{name: face, path: {FACE_BACK}}}
in_flight: 2
nodes:
  - {{name: face_in, type: preprocess, model: face, scale: 0.0078431, mean: 127.5}}
  - {{name: face, type: infer, model: face, input: face_in}}
  - {{name: faces, type: blazeface, input: face, model: face, threshold: 0.5, iou: 0.3}}
""")
    return root


class Server:
    def __init__(self, tmp_path, *args, env=None, http_port=0, grpc_port=0, prefix=(), default_host=False,
                 preexec_fn=None):
        self.ports_file = tmp_path / f"ports{time.monotonic_ns()}"
        self.log = open(tmp_path / f"serve{time.monotonic_ns()}.log", "w+")
        host = [] if default_host else ["--host", "127.0.0.1"]
        self.proc = subprocess.Popen([*prefix, BINARY, "serve", *host, "--http-port", str(http_port),
                                      "--grpc-port", str(grpc_port), "--ports-file", str(self.ports_file), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)
        deadline = time.monotonic() + 120
        while not self.ports_file.exists() or not self.ports_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError("loom serve did not start:\n" + self.log.read())
            time.sleep(0.05)
        ports = self.ports_file.read_text().split()
        self.http = f"http://127.0.0.1:{ports[0]}"
        self.grpc = f"127.0.0.1:{ports[1]}"
        self.admin = f"http://127.0.0.1:{ports[2]}" if len(ports) > 2 else None

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def admin_args(tmp):
    """Model control on, with the admin token in a file."""
    token = tmp / "admin_token"
    token.write_text(ADMIN_TOKEN + "\n")
    return ["--model-control", "explicit", "--admin-token-file", str(token)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    repo = make_repository(tmp / "repo")
    s = Server(tmp, "--repository", str(repo), *admin_args(tmp))
    yield s
    assert s.stop() == 0, s.output()


def rows(n):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4)


def test_health_and_metadata_over_http_and_curl(server):
    assert requests.get(server.http + "/v2/health/live").status_code == 200
    assert requests.get(server.http + "/v2/health/ready").status_code == 200
    meta = requests.get(server.http + "/v2").json()
    assert meta["name"] == "loom" and "binary_tensor_data" in meta["extensions"]
    add = requests.get(server.http + "/v2/models/add").json()
    assert add["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert requests.get(server.http + "/v2/models/add/versions/1").status_code == 200
    assert requests.get(server.http + "/v2/models/add/ready").json()["ready"] is True
    faces = requests.get(server.http + "/v2/models/faces").json()
    assert faces["platform"] == "loom_pipeline"
    # curl, as a shell user would call it.
    out = subprocess.run(["curl", "-sS", "-f", server.http + "/v2/models/face"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["inputs"][0]["shape"] == [1, 128, 128, 3]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    out = subprocess.run(["curl", "-sS", "-f", "-H", "Content-Type: application/json", "-d", body,
                          server.http + "/v2/models/add/infer"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["outputs"][0]["data"] == [2, 3, 4, 5]
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", server.http + "/v2/models/nope"],
                         capture_output=True, text=True)
    assert out.stdout == "404"


def test_infer_json_and_binary_agree_with_grpc_raw_and_typed(server, pb):
    pb2, pb2_grpc = pb
    x = rows(3)
    r = requests.post(server.http + "/v2/models/add/infer",
                      json={"id": "j", "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": x.tolist()}]})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "j"
    via_json = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(3, 4)
    np.testing.assert_array_equal(via_json, x + 1)
    header = json.dumps({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    r = requests.post(server.http + "/v2/models/add/infer", data=header + x.tobytes(),
                      headers={"Inference-Header-Content-Length": str(len(header)), **OCTET})
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    out = json.loads(r.content[:n])["outputs"][0]
    assert out["parameters"]["binary_data_size"] == x.nbytes
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], np.float32).reshape(3, 4), x + 1)

    stub = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))
    assert stub.ServerLive(pb2.ServerLiveRequest()).live
    assert stub.ServerReady(pb2.ServerReadyRequest()).ready
    assert stub.ModelReady(pb2.ModelReadyRequest(name="add")).ready
    assert stub.ServerMetadata(pb2.ServerMetadataRequest()).name == "loom"
    meta = stub.ModelMetadata(pb2.ModelMetadataRequest(name="add"))
    assert list(meta.inputs[0].shape) == [-1, 4] and meta.inputs[0].datatype == "FP32"
    tensor = pb2.ModelInferRequest.InferInputTensor
    raw = stub.ModelInfer(pb2.ModelInferRequest(model_name="add", inputs=[tensor(name="x", datatype="FP32", shape=[3, 4])],
                                                raw_input_contents=[x.tobytes()]))
    np.testing.assert_array_equal(np.frombuffer(raw.raw_output_contents[0], np.float32).reshape(3, 4), x + 1)
    typed = stub.ModelInfer(pb2.ModelInferRequest(model_name="add", inputs=[tensor(
        name="x", datatype="FP32", shape=[3, 4], contents=pb2.InferTensorContents(fp32_contents=x.ravel().tolist()))]))
    assert list(typed.outputs[0].shape) == [3, 4]
    np.testing.assert_array_equal(np.frombuffer(typed.raw_output_contents[0], np.float32).reshape(3, 4), x + 1)
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(pb2.ModelInferRequest(model_name="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(pb2.ModelInferRequest(model_name="add", inputs=[tensor(name="x", datatype="FP32", shape=[3, 4])],
                                              raw_input_contents=[b"12345"]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in e.value.details()


def test_a_pipeline_is_served_as_one_model(server, pb):
    pb2, pb2_grpc = pb
    jpeg = open(MESSI, "rb").read()
    r = requests.post(server.http + "/v2/models/faces/infer", json={
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [jpeg.decode("latin-1")]}]})
    # JSON BYTES are text (here the JPEG's bytes as UTF-8 text, no longer a JPEG): the pipeline
    # answers that the image cannot be decoded. An encoded image travels binary: that is the way.
    assert r.status_code == 400 and "cannot be decoded" in r.json()["error"], r.text
    header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(jpeg) + 4}}]}).encode()
    r = requests.post(server.http + "/v2/models/faces/infer",
                      data=header + len(jpeg).to_bytes(4, "little") + jpeg,
                      headers={"Inference-Header-Content-Length": str(len(header)), **OCTET})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES"
    record = json.loads(out["data"][0])
    assert len(record["faces"]) >= 1, record
    stub = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))
    tensor = pb2.ModelInferRequest.InferInputTensor
    resp = stub.ModelInfer(pb2.ModelInferRequest(model_name="faces", inputs=[tensor(name="image", datatype="BYTES", shape=[1])],
                                                 raw_input_contents=[len(jpeg).to_bytes(4, "little") + jpeg]))
    raw = resp.raw_output_contents[0]
    size = int.from_bytes(raw[:4], "little")
    assert json.loads(raw[4:4 + size])["faces"] == record["faces"]
    # Not an image: an error record as a 400, the server goes on.
    r = requests.post(server.http + "/v2/models/faces/infer",
                      data=json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                   "data": ["not an image"]}]}).encode(), headers=JSON)
    assert r.status_code == 400 and "error" in r.json()


def test_repository_index_unload_and_load(server, pb):
    pb2, pb2_grpc = pb
    repository = server.http + "/v2/repository"
    assert requests.post(repository + "/index", json={}).status_code == 401  # the admin token
    index = requests.post(repository + "/index", json={}, headers=ADMIN).json()
    assert {e["name"]: e["state"] for e in index} == {"add": "READY", "face": "READY", "faces": "READY"}
    assert requests.post(repository + "/models/face/unload", headers=ADMIN).status_code == 200
    assert requests.get(server.http + "/v2/models/face/ready").status_code in (404, 503)
    r = requests.post(server.http + "/v2/models/face/infer", json={"inputs": []})
    assert r.status_code == 404 and "face" in r.json()["error"]
    states = {e["name"]: e["state"] for e in requests.post(repository + "/index", json={}, headers=ADMIN).json()}
    assert states["face"] == "UNAVAILABLE"
    ready_only = requests.post(repository + "/index", json={"ready": True}, headers=ADMIN).json()
    assert "face" not in {e["name"] for e in ready_only}
    # gRPC loads it back, with the token in its metadata.
    stub = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))
    with pytest.raises(grpc.RpcError) as e:
        stub.RepositoryModelLoad(pb2.RepositoryModelLoadRequest(model_name="face"))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stub.RepositoryModelLoad(pb2.RepositoryModelLoadRequest(model_name="face"),
                             metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])
    assert requests.get(server.http + "/v2/models/face/ready").status_code == 200
    x = np.zeros((1, 128, 128, 3), np.float32)
    header = json.dumps({"inputs": [{"name": "input:0", "shape": [1, 128, 128, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    r = requests.post(server.http + "/v2/models/face/infer", data=header + x.tobytes(),
                      headers={"Inference-Header-Content-Length": str(len(header)), **OCTET})
    assert r.status_code == 200, r.text
    r = requests.post(repository + "/models/nothere/load", headers=ADMIN)
    assert r.status_code == 404 and "nothere" in r.json()["error"]


def test_metrics_parse_and_count_what_happened(server):
    before = metrics(server)
    for _ in range(5):
        requests.post(server.http + "/v2/models/add/infer",
                      json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    requests.post(server.http + "/v2/models/add/infer", json={"inputs": [{"name": "x"}]})
    after = metrics(server)
    key = ("loom_requests_total", (("model", "add"), ("outcome", "success"), ("protocol", "http")))
    assert after[key] - before.get(key, 0) == 5
    bad = ("loom_requests_total", (("model", "add"), ("outcome", "invalid_argument"), ("protocol", "http")))
    assert after.get(bad, 0) - before.get(bad, 0) == 1
    names = {name for name, _ in after}
    for family in ["loom_request_duration_seconds_bucket", "loom_queue_duration_seconds_bucket",
                   "loom_compute_duration_seconds_bucket", "loom_batch_size_bucket", "loom_inflight_requests",
                   "loom_queue_depth", "loom_worker_busy_ratio", "loom_worker_cores",
                   "loom_process_resident_memory_bytes", "loom_model_ready"]:
        assert family in names, family


def metrics(server):
    text = requests.get(server.http + "/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_until(condition, timeout=120, what="a condition"):
    """Polls `condition` until it holds; fails after `timeout` seconds (a bound, not a pace)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)


def hammer(url, x, stop, results, lock, progress=None, index=0):
    """One client: binary requests in a loop until `stop`; tallies each outcome, and counts its
    own answers in progress[index]."""
    header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    body = header + x.tobytes()
    session = requests.Session()
    while not stop.is_set():
        try:
            r = session.post(url, data=body, timeout=30,
                             headers={"Inference-Header-Content-Length": str(len(header)), **OCTET})
            if r.status_code == 200:
                n = int(r.headers["Inference-Header-Content-Length"])
                ok = np.array_equal(np.frombuffer(r.content[n:], np.float32).reshape(x.shape), x + 1)
                outcome = "ok" if ok else "wrong"
            else:
                outcome = str(r.status_code)
        except requests.ConnectionError as e:
            text = str(e).lower()
            # refused: the port is closed. aborted: the server closed an idle keep-alive connection
            # as this request was being sent (it never read it): the client sees end of file, or a
            # reset if the request's bytes were still unread in the server's socket when it closed.
            # Anything else is broken.
            aborted = "remotedisconnected" in text or "connection reset by peer" in text
            outcome = "refused" if "refused" in text else "aborted" if aborted else "broken"
            if outcome == "broken":
                with lock:
                    results.setdefault("why", []).append(str(e)[:300])
        except requests.RequestException as e:
            outcome = "broken"
            with lock:
                results.setdefault("why", []).append(f"{type(e).__name__}: {str(e)[:300]}")
        with lock:
            results[outcome] = results.get(outcome, 0) + 1
            if progress is not None:
                progress[index] += 1
        if outcome == "refused":
            time.sleep(0.01)  # the port is closed: this client paces its retries


def test_sigterm_with_32_clients_answers_every_accepted_request(tmp_path):
    repo = make_repository(tmp_path / "repo")
    s = Server(tmp_path, "--repository", str(repo))
    stop, lock, results, progress = threading.Event(), threading.Lock(), {}, [0] * 32
    x = rows(2)
    clients = [threading.Thread(target=hammer, args=(s.http + "/v2/models/add/infer", x, stop, results, lock,
                                                     progress, i)) for i in range(32)]
    for c in clients:
        c.start()
    # Every client has had answers before the signal.
    wait_until(lambda: min(progress) >= 5, what="5 answers per client")
    s.proc.send_signal(signal.SIGTERM)
    code = s.proc.wait(timeout=60)
    # After the exit, every client tries once more (and finds the port closed).
    with lock:
        at_exit = list(progress)
    wait_until(lambda: all(p > a for p, a in zip(progress, at_exit)), what="a try per client after the exit")
    stop.set()
    for c in clients:
        c.join()
    assert code == 0, s.output()
    assert "drained, every accepted request answered" in s.output()
    # Accepted requests: answered right. After the drain began: 503 (refused, never half-answered),
    # then connection refused once the port closed.
    assert results.get("ok", 0) >= 5 * 32, results
    assert results.get("wrong", 0) == 0 and results.get("broken", 0) == 0, (results.get("why"), results)
    assert set(results) <= {"ok", "503", "refused", "aborted"}, results
    # A client meets a closing idle connection at most once: its next try is refused.
    assert results.get("aborted", 0) <= 32, results


def test_load_64_clients_every_request_answered_and_rss_flat(tmp_path):
    """RSS after a warm-up of 2,000 answers, then after LOOM_LOAD_REQUESTS more (default 5,000;
    scripts/load_serve runs 50,000): at most 50 MB more."""
    count = int(os.environ.get("LOOM_LOAD_REQUESTS", "5000"))
    repo = make_repository(tmp_path / "repo")
    s = Server(tmp_path, "--repository", str(repo))
    stop, lock, results = threading.Event(), threading.Lock(), {}
    x = rows(1)
    clients = [threading.Thread(target=hammer, args=(s.http + "/v2/models/add/infer", x, stop, results, lock))
               for _ in range(64)]
    answers = lambda: sum(v for k, v in results.items() if k != "why")  # noqa: E731
    for c in clients:
        c.start()
    wait_until(lambda: answers() >= 2000, what="2,000 answers of warm-up")
    rss_warm, at_warm = rss_mb(s.proc.pid), answers()
    wait_until(lambda: answers() >= at_warm + count, timeout=600, what=f"{count} answers")
    rss_end = rss_mb(s.proc.pid)
    stop.set()
    for c in clients:
        c.join()
    assert s.stop() == 0, s.output()
    print(f"load: {answers()} answers to 64 clients, outcomes {results}, RSS {rss_warm:.1f} -> {rss_end:.1f} MB")
    assert results.get("ok", 0) > 0
    # Every request answered: right, or an explicit overload (503); nothing broken or wrong.
    assert set(results) <= {"ok", "503"}, results
    assert rss_end - rss_warm <= 50, (rss_warm, rss_end)


def test_bench_serve_reports_every_mode_side_by_side(tmp_path):
    """`loom bench serve` runs (its figures are not asserted: speed lives in the bench itself)."""
    add = str(tmp_path / "add.onnx")
    _loom._write_add_model(add, 4)
    modes = ["inprocess", "http-binary", "http-json", "grpc", "http-live", "grpc-live"]
    out = subprocess.run([BINARY, "bench", "serve", "--model", f"add={add}", "--concurrency", "1,2", "--seconds", "0.2",
                          "--reps", "1", "--modes", ",".join(modes), "--json", "-"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"] == "add"
    seen = {(r["mode"], r["concurrency"]) for r in report["rows"]}
    assert seen == {(m, c) for m in modes for c in [1, 2]}
    for r in report["rows"]:
        assert r["requests"] > 0 and r["errors"] == 0, r
        assert r["p50_us"] <= r["p90_us"] <= r["p99_us"], r
        # The load generator's own CPU is measured wherever it is not the engine's caller.
        if r["mode"] == "inprocess":
            assert r["client_cpu_us"] == 0, r
        else:
            assert r["client_cpu_us"] > 0 and 0 < r["client_cpu_share"] <= 1, r
