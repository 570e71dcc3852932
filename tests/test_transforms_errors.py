"""Finding the error that explains a failure under MONAI's and the frameworks' wrappers (``root_cause``)."""

from __future__ import annotations

import pytest
from monai.transforms import Compose

from custom_transforms.errors import AnnotationError, PXRReadError, root_cause


def _raise(error):
    def transform(data):
        raise error

    return transform


def _caught(callable_):
    try:
        callable_()
    except Exception as error:  # noqa: BLE001 - the test looks at whatever was raised
        return error
    raise AssertionError("nothing was raised")


def test_the_project_error_under_nested_compose_wrappers():
    planted = PXRReadError("/data/a.dcm: not a DICOM file")
    error = _caught(lambda: Compose([Compose([_raise(planted)])])({"image": "a"}))
    assert type(error) is RuntimeError and str(error).startswith("applying transform")  # MONAI's wrapper
    assert root_cause(error) is planted
    assert root_cause(error, prefer=(Exception,)) is planted  # MONAI's wrapper is never the answer


def test_the_outermost_preferred_error_wins_over_what_it_was_raised_from():
    def read():
        try:
            raise OSError("errno 5")
        except OSError as low_level:
            raise PXRReadError("/data/a.dcm: cannot read the file") from low_level

    error = _caught(lambda: Compose([lambda d: read()])({}))
    assert isinstance(root_cause(error), PXRReadError)
    # without a preferred class on the chain: the innermost explicit cause
    assert isinstance(root_cause(error, prefer=(KeyError,)), OSError)


def test_prefer_chooses_among_the_errors_on_the_chain():
    inner = AnnotationError("a.json: landmark 'asis_r' missing")
    outer = RuntimeError("config evaluation failed")
    outer.__cause__ = inner
    assert root_cause(outer) is inner  # ValueError preferred by default
    assert root_cause(outer, prefer=(RuntimeError,)) is outer  # not MONAI's wrapper: a real RuntimeError


def test_an_error_raised_while_handling_another_is_found_through_its_context():
    def framework():
        try:
            raise AnnotationError("a.json: bad spacing")
        except ValueError:
            raise RuntimeError("task failed")  # noqa: B904 - a framework that does not chain explicitly

    error = _caught(framework)
    assert isinstance(root_cause(error), AnnotationError)
    # the fallback (no preferred error) is the innermost *explicit* cause: here the error itself
    assert root_cause(error, prefer=(KeyError,)) is error


def test_an_unwrapped_error_is_its_own_root_cause():
    error = KeyError("image")
    assert root_cause(error) is error
    with pytest.raises(KeyError):
        raise root_cause(error)
