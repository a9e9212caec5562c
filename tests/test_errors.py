"""core/errors.py: every code is an ErrorCode, declared once with its meaning, and documented."""

from __future__ import annotations

import re
from pathlib import Path

import app.state  # noqa: F401 (every module that declares a JobError class, so that the tree below is whole)
import core.generation
import core.pipeline  # noqa: F401
from core.adapters import hub, s3
from core.errors import ErrorCode, HubAuthError, JobError, SpecError

ROOT = Path(__file__).resolve().parent.parent


def documented_text() -> str:
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_the_readme_and_docs_list_every_error_code():
    text = documented_text()
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in text]
    assert missing == [], f"add these codes to docs/errors.md: {missing}"
    assert "docs/errors.md" in (ROOT / "README.md").read_text()


def test_every_code_has_a_meaning_and_one_name():
    assert all(code.meaning for code in ErrorCode)
    assert len({code.value for code in ErrorCode}) == len(ErrorCode)
    assert ErrorCode("hub_auth") is ErrorCode.HUB_AUTH and ErrorCode.HUB_AUTH == "hub_auth"


def test_every_error_class_carries_an_error_code():
    def tree(cls: type[JobError]) -> list[type[JobError]]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in tree(child))]

    classes = tree(JobError)
    assert len(classes) > 20  # the whole tree, the stages' own classes included
    assert [cls.__name__ for cls in classes if not isinstance(cls.code, ErrorCode)] == []


def test_the_adapters_codes_are_error_codes_with_their_meanings():
    for table in (hub.CODES, s3.CODES):
        assert all(isinstance(code, ErrorCode) and text == code.meaning for code, text in table.items())
    assert set(hub.CODES) == {code for code in ErrorCode if code.value.startswith("hub_")}
    assert set(s3.CODES) == {code for code in ErrorCode if code.value.startswith("s3_")}


def test_a_payload_carries_the_code_as_plain_text():
    payload = HubAuthError("refused", field="hub.token").to_payload()
    assert type(payload["code"]) is str and payload["code"] == "hub_auth"
    assert SpecError("bad", field="x").to_payload()["code"] == "invalid_input"


def test_no_module_spells_a_code_as_a_string():
    literal = re.compile(r"""\bcode\s*(?::\s*\w+\s*)?=\s*["'][a-z_0-9]+["']""")
    found = [f"{path.relative_to(ROOT)}:{number}" for folder in ("core", "app", "worker")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert found == [], "use core.errors.ErrorCode"
