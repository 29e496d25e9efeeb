"""Evaluation: metrics, calibration, predictions on a split."""

# NOTE: importing this subpackage makes Python bind ``nextclass.evaluate`` to it, replacing the public
# function of the same name. The package is therefore callable and does exactly what the function
# does, so ``nextclass.evaluate(run, data)`` works before and after any ``nextclass.evaluate.*`` import.
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .. import _evaluate_function

        return _evaluate_function(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
