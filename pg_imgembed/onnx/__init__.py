"""onnxruntime: sessions, external data, the model file cache and optimized graphs.
"""
