"""tests/conftest.py: with CI set, a skip naming a required dependency fails; other skips stay skips."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
TESTS = '''
import pytest
pytest.importorskip("osmnx_is_not_installed_here")  # noqa
'''
INLINE = '''
import pytest

@pytest.mark.skipif(True, reason="no Chromium at /nowhere")
def test_browser():
    pass

def test_bnb():
    pytest.importorskip("bitsandbytes_missing")

def test_unrelated_skip():
    pytest.skip("needs a GPU")

def test_ok():
    assert True
'''


@pytest.mark.parametrize("ci", ["true", ""])
def test_required_skips_fail_only_in_ci(pytester, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_module_level=TESTS, test_inline=INLINE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q", "--continue-on-collection-errors")
    if ci:
        result.assert_outcomes(passed=1, skipped=1, failed=1, errors=2)  # setup/collection skips: errors
        out = result.stdout.str()
        for dep, why in (("osmnx", "could not import 'osmnx_is_not_installed_here'"),
                         ("chromium", "no Chromium at /nowhere"),
                         ("bitsandbytes", "could not import 'bitsandbytes_missing'")):
            assert f"required dependency ({dep}) is missing: Skipped: {why}" in out
    else:
        result.assert_outcomes(passed=1, skipped=4)
