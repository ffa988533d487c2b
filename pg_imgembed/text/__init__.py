"""The text tower: its config, tokenizer and the tower that turns text into vectors.
"""
