"""Training: the loop, optimisers and schedules, checkpoints, transfer-learning recipes."""
