"""Curation jobs: fix the data, not just the model.

* :mod:`nextclass.curation.embed` - embeddings of a dataset: a run's trunk, a timm backbone, or pixels.
* :mod:`nextclass.curation.label_audit` - ``nextclass audit --labels``: cleanlab label issues on
  out-of-sample probabilities from cross-validated heads on those embeddings.
* :mod:`nextclass.curation.suggest` - ``nextclass suggest``: which unlabelled images to label next.
"""
