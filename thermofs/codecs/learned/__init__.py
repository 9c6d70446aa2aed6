"""The learned cold-tier codec: a context-mixing model with a pretrained prior (see kernel.py).

The codec class is importable without numba: the kernel and the model code load at first use, so
commands that never code a learned chunk (stats, mount of a volume without learned frames) start fast.
"""

from thermofs.codecs.learned.codec import LearnedCodec

__all__ = ["LearnedCodec"]
