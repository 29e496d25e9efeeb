"""Numbers from logits: classification metrics, calibration, test-time augmentation, robustness."""
