"""Thin scripts that reproduce Pearce et al. (PAIR 2023), one per figure; the logic is in mechgrok."""
