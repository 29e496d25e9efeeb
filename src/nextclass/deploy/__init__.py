"""Deployment: the predictor behind :func:`nextclass.load`, ONNX/int8 export (:func:`nextclass.export`),
the ONNX Runtime backend, the versioned model store and sharded prediction over several processes.

Modules: :mod:`.predictor` (torch backend, ``load``), :mod:`.runtime` (ONNX Runtime backend),
:mod:`.export` (``export_onnx`` with the parity check and optional int8), :mod:`.onnx`, :mod:`.quantize`,
:mod:`.samples` (real images of a run for checks), :mod:`.store`, :mod:`.sharded`.
"""
