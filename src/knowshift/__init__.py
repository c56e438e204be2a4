"""knowshift: what fine-tuning does to what a language model knows."""

__version__ = "0.1.0"
