"""Prove a conversion: restore checkpoints into freshly built RNNs with each framework's own
restore, run them on the same inputs, and compare (`run.verify`, `run.verify_into`)."""
