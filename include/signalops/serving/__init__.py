"""The serving sidecar: ``python -m signalops.serving`` (see ``app``). Never imports training."""
