"""kdaliens.export: lowers a trained student to ExecuTorch, ONNX and LiteRT bundles."""
