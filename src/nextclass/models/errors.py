"""The error every models module raises for a name, weight file or head that cannot be used."""

__all__ = ["ModelError"]


class ModelError(ValueError):
    """A model name, weight file or head that cannot be used; the message says which."""
