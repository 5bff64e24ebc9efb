"""Datasets of the paper (FineGym, Diving48, HAA500, Toyota-Smarthome, Kinetics-400) and generic formats."""
