"""Stage 5, deploy: ONNX export with its parity check, and latency on the runtimes."""
