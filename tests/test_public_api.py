import pytest

import featpipe


@pytest.mark.parametrize("name", sorted(featpipe._EXPORTS))
def test_every_export_resolves(name):
    assert getattr(featpipe, name).__name__ == name


def test_no_export_is_shadowed_by_a_submodule():
    import pkgutil

    submodules = {module.name for module in pkgutil.iter_modules(featpipe.__path__)}
    assert not submodules & set(featpipe._EXPORTS)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        featpipe.nope
