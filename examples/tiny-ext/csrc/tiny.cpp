// One op, registered with the torch dispatcher. The headers are the small ones on purpose:
// <torch/extension.h> pulls in pybind11 and all of ATen and takes ten times longer to compile.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/mul.h>
#include <torch/headeronly/version.h>
#include <torch/library.h>

#include <string>

namespace {

at::Tensor scale_add(const at::Tensor& x, double a) { return at::add(at::mul(x, a), 1); }

// TORCH_VERSION is the torch this file was compiled against: a wrong-ABI build shows here.
std::string compiled_torch_version() { return TORCH_VERSION; }

}  // namespace

TORCH_LIBRARY(tiny_ext, m) {
  m.def("scale_add(Tensor x, float a) -> Tensor", &scale_add);
  m.def("compiled_torch_version() -> str", &compiled_torch_version);
}

// Importing tiny_ext._C loads the library, which registers the ops above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
