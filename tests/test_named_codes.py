"""Review action codes are named once (server.pas.constants.ReviewAction): a raw "A1" in another
module is how two modules come to disagree about what an outcome is called."""

from __future__ import annotations

import re

from server.pas.constants import ReviewAction
from tests.support import ROOT

RAW = re.compile(r"""["'](A1|A3|A4|A6)["']""")


def test_no_module_spells_a_review_action_code_itself():
    found = []
    for folder in ("server", "cds_hooks", "questionnaires", "capability"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "server" / "pas" / "constants.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if RAW.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert found == []


def test_the_named_codes_are_the_x12_codes():
    assert [a.value for a in ReviewAction] == ["A1", "A3", "A4", "A6", "C"]
