"""The Examples sections of the library's docstrings run and print what they show (doctest)."""

import doctest
import importlib
import pkgutil

import pytest

import shallow

MODULES = sorted(info.name for info in pkgutil.walk_packages(shallow.__path__, "shallow."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_print_what_they_show(name):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures = []
    for test in finder.find(module, name):
        result = runner.run(test, out=failures.append)
        assert result.failed == 0, "".join(failures)
