"""What is done with runs: sweeps (``sweep/``), comparisons and plots (``compare/``), inspection."""
