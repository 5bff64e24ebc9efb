"""Training engine: run configs, checkpoints, metrics, distributed utilities, sampler, optimiser and logging.

Modules (imported on demand, so that ``import pevl.engine`` stays cheap):

- :mod:`pevl.engine.config` -- YAML run configs with ``_base_`` inheritance and ``--set`` overrides.
- :mod:`pevl.engine.checkpoint` -- atomic checkpoints: safetensors weights, a weights-only training state.
- :mod:`pevl.engine.metrics` -- top-k, mean class accuracy, confusion matrices, multi-view averaging.
- :mod:`pevl.engine.distributed` -- torchrun set-up, feature gathering for contrastive losses.
- :mod:`pevl.engine.sampler` -- a sharded sampler that resumes mid-epoch.
- :mod:`pevl.engine.optim` -- AdamW without decay on norms/embeddings/tokens, warm-up + cosine schedule.
- :mod:`pevl.engine.logger` -- metrics to JSON lines and TensorBoard.
"""
