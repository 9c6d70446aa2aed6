"""The learned cold-tier codec: a context-mixing model with a pretrained prior (see kernel.py)."""

from thermofs.codecs.learned.codec import LearnedCodec
from thermofs.codecs.learned.model import BadModel, Model

__all__ = ["BadModel", "LearnedCodec", "Model"]
