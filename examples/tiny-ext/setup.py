"""tiny-ext: one op, compiled against whatever torch the build environment has.

The version is dynamic, as DeepSpeed's is: version.txt plus an optional TINY_EXT_BUILD_STRING.
Set TINY_EXT_CUDA=1 to add a CUDA kernel (needs nvcc and a CUDA build of torch).
"""

import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "version.txt")) as f:
    version = f.read().strip() + os.environ.get("TINY_EXT_BUILD_STRING", "")

if os.environ.get("TINY_EXT_CUDA") == "1":
    ext = CUDAExtension("tiny_ext._C", ["csrc/tiny.cpp", "csrc/tiny_cuda.cu"],
                        extra_compile_args={"cxx": ["-std=c++20"], "nvcc": ["-std=c++20"]})
else:
    ext = CppExtension("tiny_ext._C", ["csrc/tiny.cpp"], extra_compile_args=["-std=c++20"])

setup(
    name="tiny-ext",
    version=version,
    packages=["tiny_ext"],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension},
)
