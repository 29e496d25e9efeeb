"""Data: sources, splits, safe decoding, the decoded-image cache, transforms and loaders."""
