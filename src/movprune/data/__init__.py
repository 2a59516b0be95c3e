"""Package data: the paper's published numbers (``sanh2020_tables.csv``, Tables 2 and 3 of Sanh et
al. 2020), read with ``importlib.resources`` by :mod:`movprune.experiments.compare.paper`."""
