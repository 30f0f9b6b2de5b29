"""Tensors as bytes: chunked top-k codecs and the safetensors payload format with its checks."""
