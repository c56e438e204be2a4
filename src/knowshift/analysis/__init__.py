"""Knowledge-shift analyses (METHODS B-E): what fine-tuning changed in what a model knows.

Each analysis is a library function over stored or freshly computed results that returns a frozen
dataclass; `knowshift analyze ...` prints it and stores it in the results database.
"""
