"""The models compared: the three RNN design patterns and the feed-forward baselines.

Each takes a `TaskIO` (what the task feeds in and wants out) and maps inputs (B, T) token ids or
(B, T, F) features to outputs (B, T, C) at every step or (B, C) once per sequence. Every size is
a required keyword: its default is written once, in the model's schema (rnnexp/config.py), and a
run builds the model from its config (rnnexp/models/sizing.py: make_model).
"""

from rnnexp.models.baselines import MLPBag, MLPWindow
from rnnexp.models.recurrent import RNNFinal, RNNHidden, RNNOutput

__all__ = ["MLPBag", "MLPWindow", "RNNFinal", "RNNHidden", "RNNOutput"]
