"""Thin scripts that reproduce the figures of Nanda's Alignment Forum post (2022), one per figure; the logic is in mechgrok."""
