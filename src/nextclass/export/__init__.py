"""Export a bundle for deployment: ONNX (fp32, dynamic batch), int8 (ONNX Runtime static
quantisation) and the ONNX Runtime predictor used by ``predict``/``serve --backend onnx``.

Modules: :mod:`.onnx` (``export_onnx``), :mod:`.quantize` (``quantize_int8``),
:mod:`.runtime` (``OnnxPredictor``), :mod:`.samples` (real images of a run for checks).
"""

__all__: list[str] = []
