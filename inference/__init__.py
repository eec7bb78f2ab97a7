"""Whisper on ONNX Runtime: export, audio, features, decoding, gRPC server and client."""
