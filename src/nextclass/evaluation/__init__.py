"""The evaluation job: a finished run's bundle on one of its splits or on another dataset
(:func:`nextclass.evaluation.run.evaluate`, what :func:`nextclass.evaluate` calls). It produces
numbers (``metrics.json``, ``predictions*.csv``); the report is rendered by :mod:`nextclass.report`.
"""
