"""The package version, read by setup.py and `keras_adapters.__version__`."""

__version__ = "0.2.0"
