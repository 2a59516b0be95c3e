"""Recipes, the training loop, distillation, results, sweeps and comparisons."""
