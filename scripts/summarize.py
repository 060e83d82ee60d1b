#!/usr/bin/env python3
"""summarize.py OUT_DIR SECONDS - reads every JUnit report in OUT_DIR and prints
one line: how many tests passed and failed. A skipped test is not a pass: it is
counted as failed, so a green line means every test ran and passed."""
import glob
import sys
import xml.etree.ElementTree as ET

out, secs = sys.argv[1], sys.argv[2]
passed = failed = 0
bad = []
for path in sorted(glob.glob(f"{out}/*.xml")):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        failed += 1
        bad.append(f"{path}: unreadable report ({e})")
        continue
    suite = path.rsplit("/", 1)[-1][:-4]
    for case in root.iter("testcase"):
        name = f"{suite}::{case.get('classname', '')}::{case.get('name')}"
        problems = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        if problems:
            failed += 1
            bad.append(f"{name} ({problems[0]})")
        else:
            passed += 1
if passed + failed == 0:
    failed = 1
    bad.append("no test reports were produced")
for b in bad:
    print(f"FAILED {b}")
print(f"make test: {passed} passed, {failed} failed in {secs}s")
sys.exit(1 if failed else 0)
