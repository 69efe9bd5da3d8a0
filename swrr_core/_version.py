"""The package version, in a module of its own so that no module inside swrr imports the face."""

__version__ = "0.1.0"
