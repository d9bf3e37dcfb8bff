"""featpipe: extract features from a frozen pretrained base once, then try heads on the cache in seconds.

The public API is re-exported here lazily, so that `import featpipe` (and `featpipe --help`) stays fast
and TensorFlow is imported only when something needs it.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "FeatpipeError": "featpipe.errors",
    "load_image_folder": "featpipe.data",
    "ImageFolder": "featpipe.data",
    "make_splits": "featpipe.splitting",
    "load_backbone": "featpipe.backbones",
    "Backbone": "featpipe.backbones",
    "extract": "featpipe.extract",
    "FeatureCache": "featpipe.store",
    "classification_metrics": "featpipe.metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featpipe' has no attribute {name!r}")
