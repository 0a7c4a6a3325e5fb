"""rnnexp's Hydra sweeper `span` (hydra/sweeper=span): the memory span, measured adaptively.

A Hydra plugin lives in the `hydra_plugins` namespace package, where Hydra looks for plugins;
the span's fit and design are rnnexp's (`rnnexp.span`), this package only launches the runs."""
