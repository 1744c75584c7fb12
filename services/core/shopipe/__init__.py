"""shopipe core: what every shopipe service shares."""

__version__ = "0.1.0"
