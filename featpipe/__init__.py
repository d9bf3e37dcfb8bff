"""featpipe: extract features from a frozen pretrained base once, then try heads on the cache in seconds.

The public API is re-exported here lazily (a plain module ``__getattr__``), so that `import featpipe` (and
`featpipe --help`) stays fast and TensorFlow is imported only when something needs it. The functions live in
modules named for what they do: ``featpipe.extract`` is ``featpipe.extraction.extract``, ``featpipe.predict``
is ``featpipe.prediction.predict``.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FeatpipeError": "featpipe.errors",
    "load_image_folder": "featpipe.data",
    "ImageFolder": "featpipe.data",
    "make_splits": "featpipe.splitting",
    "load_backbone": "featpipe.backbones",
    "Backbone": "featpipe.backbones",
    "extract": "featpipe.extraction",
    "make_engine": "featpipe.engines",
    "FeatureCache": "featpipe.store",
    "make_head": "featpipe.heads",
    "load_head": "featpipe.heads",
    "train_head": "featpipe.train",
    "open_for_training": "featpipe.train",
    "predict": "featpipe.prediction",
    "export": "featpipe.prediction",
    "FineTuner": "featpipe.finetune",
    "run_finetune": "featpipe.finetune",
    "Experiment": "featpipe.experiment",
    "load_experiment": "featpipe.experiment",
    "run_experiment": "featpipe.experiment",
    "write_report": "featpipe.report",
    "classification_metrics": "featpipe.metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featpipe' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
