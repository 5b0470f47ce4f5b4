"""WeakWater: build a small Chinese+English language model from zero, every stage readable."""

__version__ = "0.1.0"
