"""`loom serve` as an operator exposes it, from the outside: a real server process, curl, requests
and grpcio. Each test is a finding of the server's hardening: the default address and model
control, a web page's cross-origin POST, TLS and client certificates (made here with openssl),
tokens, a flood of gRPC repository calls, a 60 MiB JSON request's peak memory, a thousand idle
sockets, accepting without file descriptors, a reload under load, a failed load, and the drain.

Environment: as test_serve_clients.py (LOOM_BINARY, LOOM_SOURCE_DIR).
"""
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from test_serve_clients import (ADMIN, ADMIN_TOKEN, BINARY, OCTET, ROOT, Server, admin_args, make_repository,  # noqa: F401
                                pb, rows, wait_until)

from loom import _loom  # noqa: E402  (only to write the tiny Add model)

TOKEN = "inference-token-0123456789abcdef"
GOOD = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def add_repository(tmp, width=4):
    (tmp / "repo" / "add").mkdir(parents=True)
    _loom._write_add_model(str(tmp / "repo" / "add" / "model.onnx"), width)
    return tmp / "repo"


def status_of(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def listening_addresses(port):
    """Local addresses of the sockets listening on `port` (/proc/net/tcp, hex)."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return out


def test_by_default_loopback_only_and_the_repository_api_refused(tmp_path):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), default_host=True)
    try:
        port = int(s.http.rsplit(":", 1)[1])
        assert listening_addresses(port) == ["127.0.0.1"]
        # An unload from anywhere, then the next inference.
        r = requests.post(s.http + "/v2/repository/models/add/unload", json={})
        assert r.status_code == 403 and "--model-control" in r.json()["error"]
        assert requests.post(s.http + "/v2/models/add/infer", json=GOOD).status_code == 200
    finally:
        assert s.stop() == 0, s.output()


def test_a_web_pages_cross_origin_post_is_refused(tmp_path):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), "--model-control", "explicit", "--admin-port", "0")
    try:
        # A form on another site posting text/plain to the admin listener on loopback.
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                              "-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain",
                              "--data", "x", s.admin + "/v2/repository/models/add/unload"],
                             capture_output=True, text=True)
        assert out.stdout == "403"
        r = requests.post(s.http + "/v2/models/add/infer", data=json.dumps(GOOD), headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        assert requests.post(s.http + "/v2/models/add/infer", json=GOOD).status_code == 200
        # The admin listener takes the operator's own calls (no Origin, JSON).
        assert requests.post(s.admin + "/v2/repository/models/add/load", json={}).status_code == 200
    finally:
        assert s.stop() == 0, s.output()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("certs")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=loom test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in [("server", ["-extfile", "san.ext"]), ("client", [])]:
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=loom {name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.pem", *ext)
    return d


def infer_grpc(pb, channel, metadata=()):
    pb2, pb2_grpc = pb
    stub = pb2_grpc.GRPCInferenceServiceStub(channel)
    tensor = pb2.ModelInferRequest.InferInputTensor
    x = rows(1)
    out = stub.ModelInfer(pb2.ModelInferRequest(model_name="add", inputs=[tensor(name="x", datatype="FP32", shape=[1, 4])],
                                                raw_input_contents=[x.tobytes()]), metadata=metadata, timeout=30)
    return np.frombuffer(out.raw_output_contents[0], np.float32)


def test_tls_round_trips_with_curl_and_grpcio(tmp_path, certs, pb):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), "--tls-cert", str(certs / "server.pem"),
               "--tls-key", str(certs / "server.key"))
    try:
        https = s.http.replace("http://", "https://")
        out = subprocess.run(["curl", "-sS", "-f", "--cacert", str(certs / "ca.pem"), "-H", "Content-Type: application/json",
                              "-d", json.dumps(GOOD), https + "/v2/models/add/infer"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["outputs"][0]["data"] == [2, 3, 4, 5]
        # Plain HTTP to the TLS port is not served; an unknown CA is refused.
        assert subprocess.run(["curl", "-sS", "-f", s.http + "/v2/health/live"], capture_output=True).returncode != 0
        assert subprocess.run(["curl", "-sS", "-f", https + "/v2/health/live"], capture_output=True).returncode != 0
        root = (certs / "ca.pem").read_bytes()
        channel = grpc.secure_channel(s.grpc, grpc.ssl_channel_credentials(root_certificates=root))
        np.testing.assert_array_equal(infer_grpc(pb, channel), rows(1).ravel() + 1)
    finally:
        assert s.stop() == 0, s.output()


def test_mtls_needs_a_client_certificate(tmp_path, certs, pb):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), "--tls-cert", str(certs / "server.pem"),
               "--tls-key", str(certs / "server.key"), "--tls-client-ca", str(certs / "ca.pem"))
    try:
        https = s.http.replace("http://", "https://") + "/v2/health/ready"
        ca = ["--cacert", str(certs / "ca.pem")]
        assert subprocess.run(["curl", "-sS", "-f", *ca, https], capture_output=True).returncode != 0
        out = subprocess.run(["curl", "-sS", "-f", *ca, "--cert", str(certs / "client.pem"), "--key",
                              str(certs / "client.key"), https], capture_output=True, text=True)
        assert out.returncode == 0 and json.loads(out.stdout)["ready"] is True, out.stderr
        root = (certs / "ca.pem").read_bytes()
        with pytest.raises(grpc.RpcError) as e:
            infer_grpc(pb, grpc.secure_channel(s.grpc, grpc.ssl_channel_credentials(root_certificates=root)))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        credentials = grpc.ssl_channel_credentials(root_certificates=root,
                                                   private_key=(certs / "client.key").read_bytes(),
                                                   certificate_chain=(certs / "client.pem").read_bytes())
        np.testing.assert_array_equal(infer_grpc(pb, grpc.secure_channel(s.grpc, credentials)), rows(1).ravel() + 1)
    finally:
        assert s.stop() == 0, s.output()


def test_the_inference_token_with_curl_and_grpcio(tmp_path, pb):
    repo = add_repository(tmp_path)
    (tmp_path / "token").write_text(TOKEN + "\n")
    s = Server(tmp_path, "--repository", str(repo), "--auth-token-file", str(tmp_path / "token"))
    try:
        assert requests.get(s.http + "/v2/health/ready").status_code == 200  # probes stay open
        assert requests.post(s.http + "/v2/models/add/infer", json=GOOD).status_code == 401
        out = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {TOKEN}", "-H",
                              "Content-Type: application/json", "-d", json.dumps(GOOD),
                              s.http + "/v2/models/add/infer"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        with pytest.raises(grpc.RpcError) as e:
            infer_grpc(pb, grpc.insecure_channel(s.grpc))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        infer_grpc(pb, grpc.insecure_channel(s.grpc), metadata=[("authorization", f"Bearer {TOKEN}")])
    finally:
        assert s.stop() == 0, s.output()


def test_30000_grpc_repository_calls_leave_threads_and_memory_bounded(tmp_path, pb):
    pb2, pb2_grpc = pb
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), *admin_args(tmp_path))
    try:
        stub = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(s.grpc))
        metadata = [("authorization", f"Bearer {ADMIN_TOKEN}")]

        def unload(i):
            return stub.RepositoryModelUnload.future(pb2.RepositoryModelUnloadRequest(model_name=f"made-up-{i}"),
                                                     metadata=metadata, timeout=60)
        for f in [unload(i) for i in range(200)]:  # warm-up: connections, the first allocations
            assert f.exception().code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
        threads, rss = status_of(s.proc.pid, "Threads"), status_of(s.proc.pid, "VmRSS")
        peak_threads, codes = threads, {}
        for start in range(0, 30000, 500):
            for f in [unload(i) for i in range(start, start + 500)]:
                code = f.exception().code()
                codes[code] = codes.get(code, 0) + 1
            peak_threads = max(peak_threads, status_of(s.proc.pid, "Threads"))
        grown_mb = (status_of(s.proc.pid, "VmRSS") - rss) / 1024
        print(f"30,000 gRPC unloads: {codes}; threads {threads} -> peak {peak_threads}; RSS +{grown_mb:.1f} MB")
        assert set(codes) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}, codes
        assert sum(codes.values()) == 30000
        assert peak_threads <= threads + 2
        assert grown_mb <= 20
        assert requests.post(s.http + "/v2/models/add/infer", json=GOOD).status_code == 200
    finally:
        assert s.stop() == 0, s.output()


def test_a_60_mib_json_request_peaks_under_three_times_its_size(tmp_path):
    width = 6_000_000
    repo = add_repository(tmp_path, width)
    s = Server(tmp_path, "--repository", str(repo))
    try:
        x = np.random.default_rng(7).random(width, dtype=np.float32) * 1000
        data = ",".join(f"{v:.6f}" for v in x)
        body = ('{"inputs":[{"name":"x","shape":[1,%d],"datatype":"FP32","data":[%s]}],'
                '"parameters":{"binary_data_output":true}}' % (width, data)).encode()
        assert 58 << 20 <= len(body) <= 63 << 20, len(body)
        pid = s.proc.pid
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from now
        before = status_of(pid, "VmRSS")
        r = requests.post(s.http + "/v2/models/add/infer", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text[:300]
        n = int(r.headers["Inference-Header-Content-Length"])
        y = np.frombuffer(r.content[n:], np.float32)
        np.testing.assert_allclose(y, np.array(data.split(","), np.float32) + 1, rtol=1e-6)
        peak = (status_of(pid, "VmHWM") - before) * 1024
        print(f"60 MiB JSON: body {len(body) / 2**20:.1f} MiB, peak +{peak / 2**20:.1f} MiB "
              f"({peak / len(body):.2f}x)")
        assert peak < 3 * len(body)
    finally:
        assert s.stop() == 0, s.output()


def test_a_thousand_idle_sockets_and_health_and_inference_go_on(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip("the file descriptor limit cannot reach 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), "--header-timeout-ms", "60000")
    port = int(s.http.rsplit(":", 1)[1])
    idle = []
    try:
        threads = status_of(s.proc.pid, "Threads")
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
        # Health is answered while the thousand are held (how fast is `loom bench`'s business).
        assert requests.get(s.http + "/v2/health/live", timeout=60).status_code == 200
        assert requests.post(s.http + "/v2/models/add/infer", json=GOOD, timeout=10).status_code == 200
        assert status_of(s.proc.pid, "Threads") <= threads + 1
    finally:
        for c in idle:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert s.stop() == 0, s.output()


def test_out_of_file_descriptors_accepting_backs_off(tmp_path):
    """A server limited to 256 descriptors, 300 silent connections to its gRPC and HTTP ports (the
    gRPC ones use the descriptors up): HTTP's accept pauses instead of spinning, closes idle
    connections to make room, and a health probe queued behind them is answered."""
    repo = add_repository(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    # The header timeout (also gRPC's handshake timeout) outlasts the test: only the server's own
    # room-making closes the silent connections.
    s = Server(tmp_path, "--repository", str(repo), "--header-timeout-ms", "60000", preexec_fn=limit)
    http_port, grpc_port = int(s.http.rsplit(":", 1)[1]), int(s.grpc.rsplit(":", 1)[1])
    silent = []
    try:
        t0 = time.monotonic()
        open_fds = lambda: len(os.listdir(f"/proc/{s.proc.pid}/fd"))
        base = open_fds()
        silent = [socket.create_connection(("127.0.0.1", grpc_port)) for _ in range(200)]
        # gRPC takes its connections from the listen queue at its own pace: the HTTP ones come
        # once it holds them all.
        wait_until(lambda: open_fds() >= base + 200, timeout=30, what="gRPC to hold 200 connections")
        silent += [socket.create_connection(("127.0.0.1", http_port)) for _ in range(100)]
        r = requests.get(s.http + "/v2/health/live", timeout=60)
        assert r.status_code == 200
        for c in silent:
            c.close()
        silent = []
        text = requests.get(s.http + "/metrics", timeout=60).text
        wall = time.monotonic() - t0
        pauses = int(re.search(r"^loom_http_accept_pauses_total (\d+)$", text, re.M).group(1))
        print(f"out of descriptors: {pauses} pauses of accepting in {wall:.2f} s")
        # Each pause lasts 100 ms, one after another, so no count of them fits in less time: a
        # spinning accept (no pause, or a shorter one) breaks this bound however fast or loaded
        # the machine is.
        assert 1 <= pauses <= wall / 0.1 + 1, (pauses, wall)
        assert "pausing accepts" in s.output()
    finally:
        for c in silent:
            c.close()
        assert s.stop() == 0, s.output()


def test_a_reload_loop_under_4_clients_answers_every_request_200(tmp_path):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), *admin_args(tmp_path))
    stop, lock, outcomes = threading.Event(), threading.Lock(), {}

    def client():
        session = requests.Session()
        while not stop.is_set():
            code = session.post(s.http + "/v2/models/add/infer", json=GOOD, timeout=30).status_code
            with lock:
                outcomes[code] = outcomes.get(code, 0) + 1
    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        answered = lambda: sum(outcomes.values())
        for _ in range(5):  # each reload while the clients' requests come and go
            seen = answered()
            wait_until(lambda: answered() >= seen + 10, what="10 more answers")
            r = requests.post(s.http + "/v2/repository/models/add/load", headers=ADMIN, json={}, timeout=60)
            assert r.status_code == 200, r.text
        wait_until(lambda: outcomes.get(200, 0) >= 100, what="100 answers")
    finally:
        stop.set()
        for c in clients:
            c.join()
        assert s.stop() == 0, s.output()
    print(f"reload loop: {outcomes}")
    assert set(outcomes) == {200}, outcomes


def test_a_failed_load_leaves_the_server_ready(tmp_path):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), *admin_args(tmp_path))
    try:
        (repo / "notonnx").mkdir()
        (repo / "notonnx" / "model.onnx").write_text("not a model")
        r = requests.post(s.http + "/v2/repository/models/notonnx/load", headers=ADMIN)
        assert r.status_code >= 400 and str(repo) not in r.text
        assert requests.get(s.http + "/v2/health/ready").status_code == 200
        assert requests.post(s.http + "/v2/repository/models/add/load", headers=ADMIN).status_code == 200
        assert requests.get(s.http + "/v2/health/ready").status_code == 200
        r = requests.post(s.http + "/v2/models/face%00junk/infer", json=GOOD)
        assert r.status_code == 400 and "basic_filebuf" not in r.text
    finally:
        assert s.stop() == 0, s.output()


def test_drain_delay_keeps_answering_while_not_ready(tmp_path):
    repo = add_repository(tmp_path)
    s = Server(tmp_path, "--repository", str(repo), "--drain-delay", "30")
    s.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: requests.get(s.http + "/v2/health/ready").status_code == 503, what="not ready")
    # Not ready, and still answering: late-routed clients are served, not refused.
    assert requests.post(s.http + "/v2/models/add/infer", json=GOOD).status_code == 200
    assert requests.get(s.http + "/v2/health/live").status_code == 200
    # A second signal ends the delay; the drain goes on as without one.
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=60) == 0, s.output()
    assert "drained, every accepted request answered" in s.output()


def test_the_image_runs_as_a_user_and_the_manifests_say_where_to_listen():
    dockerfile = open(os.path.join(ROOT, "deploy", "Dockerfile")).read()
    assert "\nUSER " in dockerfile
    for manifest in ["servingruntime.yaml"]:
        text = open(os.path.join(ROOT, "deploy", "kserve", manifest)).read()
        assert '"--host", "0.0.0.0"' in text and "preStop" in text and "--drain-delay" in text
