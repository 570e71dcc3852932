""".ci/ran_tests.py: a CI step whose tests all skipped, or that collected none, fails (real pytest reports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / ".ci" / "ran_tests.py"


def _report(tmp_path: Path, body: str) -> Path:
    """A pytest run of a planted test file; returns its JUnit report."""
    (tmp_path / "test_planted.py").write_text(body)
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_planted.py"), f"--junitxml={report}"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    return report


def _check(report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(report), "planted"], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("body", "ran"),
    [
        ("import pytest\n\ndef test_a():\n    pytest.skip('no')\n\ndef test_b():\n    pytest.skip('no')\n", 0),
        ("import pytest\npytest.importorskip('no_such_module_here')\n\ndef test_a():\n    pass\n", 0),
        ("# no test in this file\n", 0),
        ("import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    pytest.skip('no')\n", 1),
        ("def test_a():\n    assert False\n", 1),  # it ran (and failed: pytest's own exit code says so)
    ],
)
def test_a_step_fails_exactly_when_no_test_ran(tmp_path, body, ran):
    result = _check(_report(tmp_path, body))
    assert result.returncode == (0 if ran else 1), result.stdout + result.stderr
    assert f"{ran} ran" in result.stdout


def test_a_missing_report_means_no_test_ran(tmp_path):
    result = _check(tmp_path / "absent.xml")
    assert result.returncode == 1 and "no test ran" in result.stderr
