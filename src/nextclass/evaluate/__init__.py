"""Evaluation: metrics, calibration, predictions on a split."""
