"""The image tower: decode, preprocessing (config, transforms, pipeline models) and the tower
that turns image bytes into vectors.
"""
