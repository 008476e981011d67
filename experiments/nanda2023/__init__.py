"""Thin scripts that reproduce Nanda et al. (ICLR 2023), one per figure or table; the logic is in mechgrok."""
