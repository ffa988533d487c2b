"""Model name -> session -> vectors: the session cache, batches, an inference server's client and
the Triton model repository it serves.
"""
