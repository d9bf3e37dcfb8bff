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


@pytest.mark.parametrize("name", ["extract", "predict"])
def test_extract_and_predict_are_callable_from_the_package(name):
    from importlib import import_module

    function = getattr(import_module(f"featpipe.{name}"), name)  # imported the usual way first
    module = getattr(featpipe, name)
    assert module.__name__ == f"featpipe.{name}" and getattr(module, name) is function  # still the module
    assert inspect.signature(module) == inspect.signature(function)
    assert callable(module)


def test_calling_featpipe_extract_extracts(tmp_path, dataset, tiny_model_file):
    backbone = featpipe.load_backbone(tiny_model_file, weights="none")
    result = featpipe.extract(featpipe.load_image_folder(dataset), backbone, tmp_path / "cache", progress=False)
    assert result.path.is_file() and result.rows == {"train": 12, "validation": 6, "test": 6}


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        featpipe.nope
