"""Stage 5, deploy: ONNX export with its parity check, latency, and saving a pruned model."""
