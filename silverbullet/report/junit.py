"""JUnit XML for `silverbullet check`: one <testcase> per gate, so CI test tabs show each one.

Follows the common Jenkins/Surefire shape: <testsuites> > <testsuite> with tests/failures/errors/
skipped/time, <testcase name classname time>, and <failure message type> or <skipped message>.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from silverbullet.errors import UserError

if TYPE_CHECKING:
    from silverbullet.check import CheckResult


def junit_xml(result: CheckResult) -> str:
    s = result.summary
    run = str(s.get("run", result.run_dir.name))
    counts = {
        "tests": str(len(result.rows)),
        "failures": str(len(result.failures)),
        "errors": "0",
        "skipped": str(sum(r.status == "skip" for r in result.rows)),
        "time": f"{result.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "silverbullet check", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": f"silverbullet.check.{run}",
            **counts,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "hostname": socket.gethostname() or "localhost",
        },
    )
    props = ET.SubElement(suite, "properties")
    for key in ("run", "benchmark", "split", "n"):
        if key in s:
            ET.SubElement(props, "property", {"name": key, "value": str(s[key])})
    for tag in ("reference", "quantized"):
        ET.SubElement(props, "property", {"name": f"accuracy.{tag}", "value": str(s["accuracy"][tag])})
    for r in result.rows:
        case = ET.SubElement(
            suite, "testcase", {"name": r.name, "classname": f"silverbullet.check.{run}", "time": "0.000"}
        )
        detail = f"value {r.value_text}, threshold {r.threshold_text}: {r.note}"
        if r.status == "fail":
            el = ET.SubElement(case, "failure", {"message": detail, "type": "ThresholdExceeded"})
            el.text = detail
        elif r.status == "skip":
            ET.SubElement(case, "skipped", {"message": r.note})
        out = ET.SubElement(case, "system-out")
        out.text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(result: CheckResult, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junit_xml(result), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write JUnit XML to {path}: {e.strerror or e}") from None
    return path
