"""Where a network's numbers come from: checkpoints read without running code (checkpoint.py),
the model zoo's verified downloads (zoo.py), files' hashes (hashing.py)."""
