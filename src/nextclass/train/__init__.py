"""Training: the loop, optimisers and schedules, checkpoints, transfer-learning recipes."""

# NOTE: importing this subpackage makes Python bind ``nextclass.train`` to it, replacing the public
# function of the same name. The package is therefore callable and does exactly what the function
# does, so ``nextclass.train(config, **fields)`` works before and after any ``nextclass.train.*`` import.
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .. import _train_function

        return _train_function(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
