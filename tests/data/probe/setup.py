"""Records the torch it was built with in probe/_built.py, as DeepSpeed records torch_info."""

import os
from importlib.metadata import version

import torch
from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "version.txt")) as f:
    project_version = f.read().strip() + os.environ.get("PROBE_BUILD_STRING", "")

with open(os.path.join(here, "probe", "_built.py"), "w") as f:
    f.write(f"TORCH = {version('torch')!r}\nCUDA = {torch.version.cuda!r}\n")

setup(name="abistamp-probe", version=project_version, packages=["probe"])
