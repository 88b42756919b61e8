"""Training loops for the base-model families (``python main.py train``): :func:`app.train.loop.train` with
per-family steps in :mod:`app.train.steps` (adversarial families alternate generator and discriminator)."""

from app.train.loop import TrainOptions, train

__all__ = ["TrainOptions", "train"]
