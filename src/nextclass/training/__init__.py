"""The training job: prepare a run, train its phases, finish it (evaluate, bundle, report).

:func:`nextclass.training.fit.fit` is what :func:`nextclass.train` calls. Modules, in the order a run
uses them: :mod:`.setup` (run directory, data, decode once) → :mod:`.defaults` (every automatic
default, logged) → :mod:`.phase` / :mod:`.recipes` (epochs, probe on cached :mod:`.features`) →
:mod:`.finish` (metrics, bundle, report). :mod:`.launch` starts it on several processes (DDP).
"""
