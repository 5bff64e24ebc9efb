"""PeVL models: the CLIP backbone, adapters, the three encoders, UCMR, SGMC and the presets."""
