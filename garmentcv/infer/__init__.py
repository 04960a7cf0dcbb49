"""ONNX file + folder -> rows, with onnxruntime only (never imports torch)."""
