"""knowshift's version (one place; knowshift.__version__ and the stored records read it)."""

__version__ = "0.1.0"
