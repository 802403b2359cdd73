"""Runs fine, but trains nothing."""
print("nothing to train")
