"""Training stages: each supplies datasets, a collator and a loss to the one Trainer."""
