"""Exit 1 when a pytest JUnit XML report shows that no test ran (none collected, or every one skipped).

    python .ci/ran_tests.py report.xml "MONAI Deploy tests"

pytest's own exit code is 0 when every collected test was skipped, and 5 when none was collected: for a CI step
whose tests must run (a venv that exists for them), both mean that the step checked nothing. Standard library
only, so that any of the CI's interpreters can run it.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def counts(path: str) -> dict[str, int]:
    """Tests, skipped, failures and errors summed over the report's test suites."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {"tests": 0, "skipped": 0, "failures": 0, "errors": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return total


def main(argv: list[str]) -> int:
    path, label = argv[1], argv[2] if len(argv) > 2 else argv[1]
    try:
        c = counts(path)
    except (OSError, ET.ParseError) as error:
        print(f"{label}: no test report ({error}): no test ran", file=sys.stderr)
        return 1
    ran = c["tests"] - c["skipped"]
    print(
        f"{label}: {c['tests']} collected, {c['skipped']} skipped, {ran} ran ({c['failures']} failed, "
        f"{c['errors']} errors)"
    )
    if ran <= 0:
        print(f"{label}: no test ran: the step checked nothing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
