"""Figures: training curves, accuracy comparisons and the paper's attention visualisations (Figs. 8-12)."""
