"""Checkpoint -> self-describing ONNX file (needs torch and onnx)."""
