"""featpipe: extract features from a frozen pretrained base once, then try heads on the cache in seconds.

The public API is re-exported here lazily, so that `import featpipe` (and `featpipe --help`) stays fast
and TensorFlow is imported only when something needs it. Functions named like their module (extract,
predict) are not re-exported: importing the submodule would shadow them; use featpipe.extract.extract.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "FeatpipeError": "featpipe.errors",
    "load_image_folder": "featpipe.data",
    "ImageFolder": "featpipe.data",
    "make_splits": "featpipe.splitting",
    "load_backbone": "featpipe.backbones",
    "Backbone": "featpipe.backbones",
    "FeatureCache": "featpipe.store",
    "make_head": "featpipe.heads",
    "load_head": "featpipe.heads",
    "train_head": "featpipe.train",
    "open_for_training": "featpipe.train",
    "export": "featpipe.predict",
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
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featpipe' has no attribute {name!r}")
