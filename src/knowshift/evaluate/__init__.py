"""Closed-book evaluation of a base model, a fine-tuned checkpoint, or base + adapter."""
