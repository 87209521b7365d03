"""loom.from_torch: PyTorch modules exported once, checked against torch eager, cached, and served by
Loom's engine, pipelines and server; the face chain's torch strategies beside Loom's."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import loom

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from loom import seed_models as sm  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "models")


def seeded(name, make):
    net = make()
    net.load_state_dict(torch.load(os.path.join(MODELS, name + ".pt")))
    return net.eval()


def calibrated(net, shape, seed=0):
    """A torchvision architecture with seeded weights and BatchNorm statistics from random inputs,
    so that its outputs depend on its input (untouched, they are little more than the last bias)."""
    g = torch.Generator().manual_seed(seed)
    return sm.calibrate_batchnorm(net, [torch.rand(4, *shape, generator=g) * 2 - 1 for _ in range(2)])


def agreement(model, module, x):
    """max |loom - torch| / output range, the export run by Loom's engine."""
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    with loom.Engine([model], cores=1) as engine:
        got = engine.infer(model.name, {"input": x})["output"]
    span = float(expected.max() - expected.min())
    assert span > 1e-3, f"{model.name}: the output barely depends on the input (range {span})"
    return float(np.abs(got - expected).max()) / span


CASES = [
    ("landmarks", lambda: seeded("seeded_landmarks_gdconv", lambda: sm.MobileNet_GDConv(136)), (3, 224, 224)),
    ("frown", lambda: seeded("seeded_frown_mnv3small", lambda: sm.MobileNetV3_Small(2)), (3, 224, 224)),
    ("resnet18", lambda: calibrated(torchvision.models.resnet18(weights=None, num_classes=10), (3, 64, 64)),
     (3, 64, 64)),
    ("squeezenet1_1", lambda: calibrated(torchvision.models.squeezenet1_1(weights=None, num_classes=10), (3, 96, 96)),
     (3, 96, 96)),
    ("shufflenet_v2", lambda: calibrated(torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10),
                                         (3, 64, 64)), (3, 64, 64)),
    ("efficientnet_b0", lambda: calibrated(torchvision.models.efficientnet_b0(weights=None, num_classes=10),
                                           (3, 64, 64)), (3, 64, 64)),
]


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_an_export_runs_on_loom_within_1e_4_of_torch_eager(tmp_path, name, make, shape):
    module = make()
    torch.manual_seed(1)
    example = torch.rand(1, *shape)
    model = loom.from_torch(module, example, name=name, cache_dir=tmp_path, max_batch_size=4)
    assert model.exported and model.name == name and os.path.exists(model.path)
    with open(model.path[:-5] + ".json") as f:
        meta = json.load(f)
    assert meta["agreement"][0]["max_abs_diff"] <= 1e-4 * meta["agreement"][0]["range"]
    # A batch of three other inputs, through the engine (dynamic batch): the same agreement.
    x = (torch.rand(3, *shape, generator=torch.Generator().manual_seed(2)) * 2 - 1).numpy()
    assert agreement(model, module, x) <= 1e-4


def test_a_second_call_uses_the_cached_file_and_new_weights_export_again(tmp_path):
    net = calibrated(torchvision.models.resnet18(weights=None, num_classes=4), (3, 32, 32))
    x = torch.zeros(1, 3, 32, 32)
    first = loom.from_torch(net, x, cache_dir=tmp_path)
    mtime = os.stat(first.path).st_mtime_ns
    again = loom.from_torch(net, x, cache_dir=tmp_path)
    assert not again.exported and again.path == first.path and os.stat(again.path).st_mtime_ns == mtime
    assert first.name == "ResNet" and not net.training, "default name: the class; the mode is restored"
    with torch.no_grad():
        net.fc.bias.add_(1.0)
    changed = loom.from_torch(net, x, cache_dir=tmp_path)
    assert changed.exported and changed.path != first.path
    other_opset = loom.from_torch(net, x, cache_dir=tmp_path, opset=13)
    assert other_opset.exported and other_opset.path not in (first.path, changed.path)


def test_names_dynamic_axes_and_a_fixed_batch(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b, a * b

    a, b = torch.rand(2, 3), torch.rand(2, 3)
    model = loom.from_torch(Two(), (a, b), cache_dir=tmp_path)
    session = loom.InferenceSession(model.path)
    assert [i.name for i in session.get_inputs()] == ["input0", "input1"]
    assert [o.name for o in session.get_outputs()] == ["output0", "output1"]
    assert session.get_inputs()[0].shape[0] in (None, "batch")
    fixed = loom.from_torch(Two(), (a, b), name="fixed", dynamic_batch=False, input_names=["a", "b"],
                            output_names=["sum", "product"], cache_dir=tmp_path)
    session = loom.InferenceSession(fixed.path)
    assert [i.shape for i in session.get_inputs()] == [[2, 3], [2, 3]]
    out = session.run(["product"], {"a": a.numpy(), "b": b.numpy()})[0]
    np.testing.assert_allclose(out, (a * b).numpy(), rtol=1e-6)
    with pytest.raises(loom.InvalidArgument, match="2 names given for 1 inputs"):
        loom.from_torch(torch.nn.ReLU(), a, input_names=["x", "y"], cache_dir=tmp_path)


def test_what_cannot_export_says_why_and_names_the_module(tmp_path):
    class Dicts(torch.nn.Module):
        def forward(self, x):
            return {"y": x}

    with pytest.raises(loom.InvalidArgument, match="module returns a dict"):
        loom.from_torch(Dicts(), torch.zeros(1, 2), cache_dir=tmp_path)

    class NoOnnx(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[0]  # no ONNX symbolic for SVD

    with pytest.raises(loom.InvalidArgument, match=r"NoOnnx cannot be exported to ONNX \(opset 17\)"):
        loom.from_torch(NoOnnx(), torch.rand(1, 3, 3), cache_dir=tmp_path)
    with pytest.raises(loom.InvalidArgument, match="takes a torch.nn.Module, got a str"):
        loom.from_torch("resnet", torch.zeros(1), cache_dir=tmp_path)
    with pytest.raises(loom.InvalidArgument, match=r"Linear cannot run on the example inputs \[\[1, 5\]\]"):
        loom.from_torch(torch.nn.Linear(4, 2), torch.zeros(1, 5), cache_dir=tmp_path)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".onnx")], "a failed export leaves no file"


def test_import_loom_does_not_import_torch():
    code = "import sys, loom; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_torch_model_replaces_a_pipeline_model_and_is_served_from_a_repository(tmp_path):
    frown = seeded("seeded_frown_mnv3small", lambda: sm.MobileNetV3_Small(2))
    model = loom.from_torch(frown, torch.zeros(1, 3, 224, 224), name="frown", cache_dir=tmp_path / "cache")
    chain = loom.Pipeline(os.path.join(ROOT, "pipelines", "face-chain.yaml"), models={"frown": model})
    records = list(chain.run(os.path.join(ROOT, "data", "messi5.jpg")))
    assert records[0]["faces"] and records[0]["faces"][0]["label"] in ("normal", "frown")
    with pytest.raises(loom.InvalidArgument, match="has no model 'smile' to replace"):
        loom.Pipeline(os.path.join(ROOT, "pipelines", "face-chain.yaml"), models={"smile": model})

    repo = tmp_path / "repo"
    model.options["max_batch_size"] = 4
    folder = model.save(repo)
    assert sorted(os.listdir(folder)) == ["config.yaml", "model.onnx"]
    ports = tmp_path / "ports"
    server = subprocess.Popen([loom._loom._cli_path(), "serve", "--repository", str(repo), "--http-port", "0",
                               "--grpc-port", "0", "--ports-file", str(ports), "--cores", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (ports.exists() and ports.read_text().strip()):
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        http = int(ports.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/frown", timeout=30) as r:
            meta = json.loads(r.read())
        assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"] == [-1, 3, 224, 224]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_face_chain_bench_runs_every_strategy_and_they_agree():
    out = subprocess.run([sys.executable, "-m", "loom.bench", "face-chain", "--quick", "--json", "-"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=900)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {r["strategy"]: r for r in report["strategies"]}
    assert set(rows) == {"torch-eager", "torch-eager-openblas", "data-parallel", "torchscript", "onnx-sequential",
                         "thread-per-model", "loom"}
    assert rows["torch-eager"]["blas"] == "reference BLAS" and rows["torch-eager-openblas"]["blas"] == "OpenBLAS"
    assert report["faces"] > 0 and report["ideal_fps"] > 0 and 0 < report["of_ideal"]
    for name, r in rows.items():
        assert r["faces"] == report["faces"], name
        # Every strategy runs the same models on the same crops: the same labels, up to a face
        # whose brow crop moves by a pixel where float rounding differs.
        assert r["same_labels_as_loom"] >= 0.8, (name, r["same_labels_as_loom"])
        assert r["why"]
    assert report["verdict"].startswith("verdict: loom = ")
