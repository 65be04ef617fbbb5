"""Log Inspect AI evaluations to MLflow through a declarative YAML + JMESPath mapping."""

__version__ = "0.1.0"

__all__ = ["__version__"]
