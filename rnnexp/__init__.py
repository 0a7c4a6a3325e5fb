"""rnnexp: controlled, tracked experiments on recurrent neural networks.

The three RNN design patterns of Goodfellow, Bengio & Courville, *Deep Learning* (2016), §10.2,
against feed-forward baselines, on tasks whose answer depends on context seen many steps earlier.
Configs compose with Hydra (`conf/`), training runs in Lightning, every run is tracked in MLflow.
"""

__version__ = "0.1.0"
