"""`pip install .` works offline, as the README says: into a venv that sees Debian's NumPy, with
no build isolation, from this checkout's CMake build. The installed package, not the build tree's,
is the one that imports and runs a model."""
import os
import shutil
import subprocess
import sys

import loom

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The build tree this suite runs against: <build>/python/loom/__init__.py.
BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(loom.__file__))))


def test_pip_install_into_a_venv_offline(tmp_path):
    # A copy of what the package is made of, so that pip's in-tree build writes nothing into the
    # checkout; the extension comes from the existing build (LOOM_BUILD_DIR).
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    shutil.copytree(os.path.join(ROOT, "python", "loom"), src / "python" / "loom")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = dict(os.environ, LOOM_BUILD_DIR=BUILD, PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)  # the venv's own site-packages, not the build tree
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index", str(src)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    model = os.path.join(ROOT, "models", "face_detection_front_128x128_barracuda.onnx")
    script = ("import loom, numpy as np\n"
              "print(loom.__file__)\n"
              f"with loom.Engine([loom.Model('face', {model!r})]) as e:\n"
              "    out = e.infer('face', np.zeros((1, 128, 128, 3), np.float32))\n"
              "    print(sorted(out))\n")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(str(venv / "lib")), lines[0]  # the installed copy
    assert lines[1] == str(["Identity:0", "Identity_1:0", "Identity_2:0", "Identity_3:0"])
