"""The models compared: the three RNN design patterns and the feed-forward baselines.

Each takes a `TaskIO` (what the task feeds in and wants out) and maps inputs (B, T) token ids or
(B, T, F) features to outputs (B, T, C) at every step or (B, C) once per sequence.
"""

from rnnexp.models.baselines import MLPBag, MLPWindow
from rnnexp.models.recurrent import RNNFinal, RNNHidden, RNNOutput

__all__ = ["MLPBag", "MLPWindow", "RNNFinal", "RNNHidden", "RNNOutput"]
