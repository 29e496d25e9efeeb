"""Export a bundle for deployment: ONNX (fp32, dynamic batch), int8 (ONNX Runtime static
quantisation) and the ONNX Runtime predictor used by ``predict``/``serve --backend onnx``.

Modules: :mod:`.onnx` (``export_onnx``), :mod:`.quantize` (``quantize_int8``),
:mod:`.runtime` (``OnnxPredictor``), :mod:`.samples` (real images of a run for checks).

NOTE: importing this package makes Python set ``nextclass.export`` to the package, replacing the
public function ``nextclass.export(run, ...)``. The package is therefore callable and does the
same thing, so ``nextclass.export(run)`` works before and after any ``nextclass.export.*`` import.
"""

from __future__ import annotations

import sys
import types

__all__: list[str] = []


class _CallablePackage(types.ModuleType):
    def __call__(self, run, **kwargs):
        """Same as :func:`nextclass.export` / :func:`nextclass.export.onnx.export_onnx`."""
        from .onnx import export_onnx

        return export_onnx(run, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
