"""CLI commands, one module each; every module has ``register(app)`` and imports heavy things lazily."""
