"""The ``--checkpoint`` help of every command that reads a trained model.

The rule itself lives in :mod:`pevl.engine.checkpoint_choice`.
"""

CHECKPOINT_HELP = (
    "a work dir (its best checkpoint when the run validated, else its latest; WORKDIR:latest or WORKDIR:best "
    "to choose), a checkpoint dir, its model.safetensors or hf-hub:org/name"
)
"""The ``--checkpoint`` help text of every command that reads a trained model."""
