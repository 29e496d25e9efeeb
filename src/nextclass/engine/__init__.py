"""The training engine: the inner loops, optimisers and schedules, checkpoints, the time budget."""
