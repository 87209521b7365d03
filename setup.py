"""Builds the loom package's extension (_loom) with this checkout's CMake build and ships it.

The build directory is $LOOM_BUILD_DIR, else build/ (configured here if scripts/setup has not yet
done it). See pyproject.toml for the offline `pip install` command.
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        root = os.path.dirname(os.path.abspath(__file__))
        build = os.environ.get("LOOM_BUILD_DIR", os.path.join(root, "build"))
        if not os.path.exists(os.path.join(build, "build.ninja")):
            subprocess.check_call(["cmake", "-S", root, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                                   f"-DPython_EXECUTABLE={sys.executable}"])
        subprocess.check_call(["cmake", "--build", build, "--target", "_loom"])
        built = glob.glob(os.path.join(build, "python", "loom", "_loom*.so"))
        if not built:
            raise RuntimeError(f"the CMake build in {build} made no _loom extension")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


setup(ext_modules=[Extension("loom._loom", sources=[])], cmdclass={"build_ext": CMakeBuild})
