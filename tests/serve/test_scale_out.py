"""Scale-out: two `loom serve` replicas on disjoint cores (taskset) behind nginx, proxying HTTP and
gRPC. Each replica in turn is drained (SIGTERM) and restarted on the same ports while clients send
through nginx: no client request fails — nginx retries a refused connection or a draining replica's
503 on the other one, and gRPC clients retry the calls that did not run (UNAVAILABLE, or gRPC core's
bare CANCELLED for a call that raced the server's Shutdown); such retries are counted and reported.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from test_serve_clients import OCTET, Server, make_repository, pb, rows, wait_until  # noqa: F401 (pb: a fixture)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp, http_port, grpc_port, replicas):
    conf = tmp / "nginx.conf"
    http_servers = "\n".join(f"    server 127.0.0.1:{h} max_fails=0;" for h, _ in replicas)
    grpc_servers = "\n".join(f"    server 127.0.0.1:{g} max_fails=0;" for _, g in replicas)
    temp = "\n".join(f"  {k}_temp_path {tmp}/{k};" for k in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx_error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp}
  upstream loom_http {{
{http_servers}
    keepalive 32;
  }}
  upstream loom_grpc {{
{grpc_servers}
  }}
  server {{
    listen 127.0.0.1:{http_port};
    client_max_body_size 64m;
    location / {{
      proxy_pass http://loom_http;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_503 non_idempotent;
      proxy_next_upstream_tries 6;
    }}
  }}
  server {{
    listen 127.0.0.1:{grpc_port} http2;
    location / {{
      grpc_pass grpc://loom_grpc;
      grpc_next_upstream error timeout http_503 non_idempotent;
      grpc_next_upstream_tries 6;
    }}
  }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not start: " + (tmp / "nginx_error.log").read_text())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two replicas need two cores")
def test_two_replicas_behind_nginx_one_drained_and_restarted_under_load(tmp_path, pb):
    pb2, pb2_grpc = pb
    repo = make_repository(tmp_path / "repo")
    cores = sorted(os.sched_getaffinity(0))
    half = len(cores) // 2
    sets = [",".join(map(str, cores[:half])), ",".join(map(str, cores[half:]))]
    replicas = [Server(tmp_path, "--repository", str(repo), prefix=("taskset", "-c", sets[i])) for i in range(2)]
    ports = [(int(r.http.rsplit(":", 1)[1]), int(r.grpc.rsplit(":", 1)[1])) for r in replicas]
    http_port, grpc_port = free_port(), free_port()
    nginx = start_nginx(tmp_path, http_port, grpc_port, ports)
    stop, lock = threading.Event(), threading.Lock()
    tally = {"http_ok": 0, "http_failed": [], "grpc_ok": 0, "grpc_retried": 0, "grpc_failed": []}
    x = rows(2)

    def http_client():
        header = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                         "parameters": {"binary_data_size": x.nbytes}}],
                             "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(f"http://127.0.0.1:{http_port}/v2/models/add/infer", data=header + x.tobytes(),
                                 headers={"Inference-Header-Content-Length": str(len(header)), **OCTET},
                                 timeout=30)
                n = int(r.headers.get("Inference-Header-Content-Length", "0"))
                good = r.status_code == 200 and np.array_equal(np.frombuffer(r.content[n:], np.float32).reshape(2, 4), x + 1)
                failure = None if good else f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                failure = f"{type(e).__name__}: {e}"
            with lock:
                if failure:
                    tally["http_failed"].append(failure)
                else:
                    tally["http_ok"] += 1

    def grpc_client():
        stub = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        tensor = pb2.ModelInferRequest.InferInputTensor
        request = pb2.ModelInferRequest(model_name="add", inputs=[tensor(name="x", datatype="FP32", shape=[2, 4])],
                                        raw_input_contents=[x.tobytes()])
        while not stop.is_set():
            failure, retried = None, 0
            for attempt in range(5):
                try:
                    out = stub.ModelInfer(request, timeout=30)
                    if not np.array_equal(np.frombuffer(out.raw_output_contents[0], np.float32).reshape(2, 4), x + 1):
                        failure = "wrong answer"
                    break
                except grpc.RpcError as e:
                    # Calls that did not run, safe to retry: UNAVAILABLE (refused while draining, or
                    # no connection), and CANCELLED with gRPC's own bare "CANCELLED" — the status gRPC
                    # core gives a call that reaches a server after its Shutdown began (it never
                    # reaches Loom). This client never cancels a call itself.
                    not_run = e.code() == grpc.StatusCode.UNAVAILABLE or (
                        e.code() == grpc.StatusCode.CANCELLED and e.details() == "CANCELLED")
                    if not_run and attempt < 4:
                        retried += 1
                        time.sleep(0.02)
                        continue
                    failure = f"{e.code()}: {e.details()}"
                    break
            with lock:
                tally["grpc_retried"] += retried
                if failure:
                    tally["grpc_failed"].append(failure)
                else:
                    tally["grpc_ok"] += 1

    clients = [threading.Thread(target=http_client) for _ in range(6)] + \
              [threading.Thread(target=grpc_client) for _ in range(2)]
    for c in clients:
        c.start()
    codes = []

    def answered():
        with lock:
            return tally["http_ok"] + tally["grpc_ok"]

    def served_by(replica):
        """Inference requests replica `replica` has answered (its own /metrics)."""
        try:
            text = requests.get(replicas[replica].http + "/metrics", timeout=5).text
        except requests.RequestException:
            return 0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("loom_requests_total{") and 'outcome="success"' in line)

    try:
        wait_until(lambda: tally["http_ok"] >= 50 and tally["grpc_ok"] >= 20, what="answers through nginx")
        for i in range(2):  # drain and restart each replica in turn, under load
            codes.append(replicas[i].stop(signal.SIGTERM))
            before = answered()
            wait_until(lambda: answered() >= before + 100, what="100 answers from the other replica alone")
            replicas[i] = Server(tmp_path, "--repository", str(repo), http_port=ports[i][0], grpc_port=ports[i][1],
                                 prefix=("taskset", "-c", sets[i]))
            wait_until(lambda: served_by(i) >= 20, what=f"replica {i} back in the fleet")
    finally:
        stop.set()
        for c in clients:
            c.join()
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=20)
        for r in replicas:
            r.stop()
    print(f"scale-out: HTTP {tally['http_ok']} ok, gRPC {tally['grpc_ok']} ok ({tally['grpc_retried']} retried "
          f"calls that did not run), failures: {tally['http_failed'][:3]} {tally['grpc_failed'][:3]}")
    assert codes == [0, 0]
    assert tally["http_ok"] > 0 and tally["grpc_ok"] > 0
    assert tally["http_failed"] == [], tally["http_failed"][:5]
    assert tally["grpc_failed"] == [], tally["grpc_failed"][:5]
