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


def _readme_examples():
    import re
    import textwrap
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S)]


@pytest.mark.parametrize("index", range(len(_readme_examples())))
def test_readme_code_examples_run(index):
    code = _readme_examples()[index]
    if "load_digits" in code:
        pytest.importorskip("sklearn", reason="the digits need the `data` extra")
    exec(compile(code, f"README.md python example {index}", "exec"), {})
