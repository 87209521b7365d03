"""What `import loom` exposes, and how its errors name a model."""
import os

import numpy as np
import pytest

import loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FACE = os.path.join(ROOT, "models", "face_detection_back_256x256_barracuda.onnx")


def test_public_names_are_the_api():
    public = {n for n in dir(loom) if not n.startswith("_")}
    assert public <= set(loom.__all__), sorted(public - set(loom.__all__))
    for stdlib in ("os", "asyncio", "atexit", "collections", "concurrent"):
        assert stdlib not in public


def test_a_wrong_input_names_the_model_as_configured():
    with loom.Engine([loom.Model("face", FACE)], cores=1) as engine:
        with pytest.raises(loom.InvalidArgument) as e:
            engine.infer("face", {"input:0": np.zeros((1, 3, 256, 256), np.float32)})
    message = str(e.value)
    assert "model 'face' input 'input:0'" in message, message
    assert "face_detection_back_256x256_barracuda" not in message, message
