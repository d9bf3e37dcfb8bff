"""featpipe: extract features from a frozen pretrained base once, then try heads on the cache in seconds.

The public API is re-exported here lazily, so that `import featpipe` (and `featpipe --help`) stays fast
and TensorFlow is imported only when something needs it. `featpipe.extract` and `featpipe.predict` are
both their module and its function: calling the module calls the function of the same name, so
``featpipe.extract(data, backbone)`` and ``from featpipe.extract import extract`` both work.
"""

import importlib
import inspect
import sys
import types

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
# Submodules named like the function they hold: importing one binds the module to the package's attribute.
_CALLABLE_MODULES = ("extract", "predict")

__all__ = ["__version__", *_EXPORTS, *_CALLABLE_MODULES]


class _CallableModule(types.ModuleType):
    """A module that, called, calls its function of the same name."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # The import system binds each submodule here once it has run: make the named ones callable.
        if name in _CALLABLE_MODULES and isinstance(value, types.ModuleType):
            value.__class__ = _CallableModule
            value.__signature__ = inspect.signature(getattr(value, name))
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featpipe' has no attribute {name!r}")
