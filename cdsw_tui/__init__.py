"""cdsw-tui: a terminal workbench that turns a Python or R function into a REST API."""

__version__ = "0.2.0"
