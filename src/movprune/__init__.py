"""movprune: movement pruning and its baselines for BERT-family encoders."""

__version__ = "0.1.0"
