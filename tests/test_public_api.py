import inspect

import pytest

import featpipe


@pytest.mark.parametrize("name", sorted(featpipe._EXPORTS))
def test_every_export_resolves(name):
    assert getattr(featpipe, name).__name__ == name


def test_no_export_is_shadowed_by_a_submodule():
    import pkgutil

    submodules = {module.name for module in pkgutil.iter_modules(featpipe.__path__)}
    assert not submodules & set(featpipe._EXPORTS)


@pytest.mark.parametrize("name, module", [("extract", "featpipe.extraction"), ("predict", "featpipe.prediction")])
def test_extract_and_predict_are_plain_functions_of_the_package(name, module):
    from importlib import import_module

    function = getattr(import_module(module), name)  # imported the usual way first: nothing is rebound
    assert getattr(featpipe, name) is function
    assert inspect.isfunction(function) and type(featpipe) is type(inspect)  # a plain module, no class magic
    assert name in dir(featpipe)


def test_calling_featpipe_extract_extracts(tmp_path, dataset, tiny_model_file):
    backbone = featpipe.load_backbone(tiny_model_file, weights="none")
    result = featpipe.extract(featpipe.load_image_folder(dataset), backbone, tmp_path / "cache", progress=False)
    assert result.path.is_file() and result.rows == {"train": 12, "validation": 6, "test": 6}


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        featpipe.nope
