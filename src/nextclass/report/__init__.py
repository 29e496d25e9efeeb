"""Plots, Grad-CAM and the self-contained ``report.html`` of a run."""
