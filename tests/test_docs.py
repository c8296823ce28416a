"""The repository explains itself: code cites the project's own ``docs/`` (or public sources such as
RFCs and the clients' source files), never documents outside the repository nor tracker numbers, and
every section of ``docs/`` that a citation names exists.

Citation forms understood (the way code and docs cite ``docs/``):

* ``docs/protocol.md F.26``, ``docs/protocol.md A.2, F.7-F.15, H.8``, ``docs/protocol.md section H``,
  ``docs/protocol.md C and D``: section labels (a letter, or a letter and numbers);
* ``docs/testing.md section 1``;
* ``docs/architecture.md, practice 8``;
* ``docs/<name>.md, "Title"``: a section whose heading contains the title (any case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("acrelease", "tests", "benchmarks", "templates")
"""Where code lives: none of it may cite what a clone does not have."""
TEXT_SUFFIXES = frozenset({".py", ".h", ".ino", ".service", ".toml", ".json", ".md", ".txt", ".cfg", ".ini"})

# Built from parts so that this file does not match itself.
OUTSIDE = re.compile(r"\b(?:" + "|".join(("PROTOCOL", "DESIGN", "TESTING")) + r")\.md\b"
                     r"|\b[Ii]ssues?[- ]#?\d+\b")
"""The research notes' names (upper case; ``docs/`` names are lower case) and tracker numbers."""

CITATION = re.compile(r"docs/([a-z0-9_-]+)\.md")
PROTOCOL_LABELS = re.compile(r"(?:[ ,/`]+(?:and |section )?[A-H](?:\.\d+)*\b(?:\s*-\s*[A-H](?:\.\d+)*\b)?)+")
LABEL = re.compile(r"[A-H](?:\.\d+)*")
SECTION = re.compile(r"`?,? section (\d+)")
PRACTICE = re.compile(r"`?,? practice (\d+)")
TITLE = re.compile(r'`?,? "([^"]+)"')


@dataclass
class Doc:
    """What a ``docs/*.md`` file offers to be cited."""

    labels: set[str] = field(default_factory=set)
    sections: set[str] = field(default_factory=set)
    practices: set[str] = field(default_factory=set)
    headings: list[str] = field(default_factory=list)


def read_doc(path: Path) -> Doc:
    doc = Doc()
    in_practices = False
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            title = heading.group(1).strip()
            doc.headings.append(title.lower())
            in_practices = title.lower() == "practices"
            label = re.match(r"([A-H](?:\.\d+)*)\.?(?: |$)", title)  # "## A. AutoConnectUpdate", "### A.2 ..."
            if label:
                doc.labels.add(label.group(1))
            number = re.match(r"(\d+)\. ", title)  # "## 1. Real `pio run`, offline"
            if number:
                doc.sections.add(number.group(1))
            continue
        item = re.match(r"- \*\*([A-H](?:\.\d+)+)\b", line)  # "- **F.26** [GP] ...", "- **H.1 Version rule.**"
        if item:
            doc.labels.add(item.group(1))
        practice = re.match(r"(\d+)\. \*\*", line)  # "8. **Never map a URL ...**"
        if practice and in_practices:
            doc.practices.add(practice.group(1))
    return doc


def text_files(*tops: str) -> list[Path]:
    files = []
    for top in tops:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def problems_of(tail: str, name: str, doc: Doc) -> list[str]:
    """What in the text right after ``docs/<name>.md`` names a section ``doc`` does not have."""
    found: list[str] = []
    if name == "protocol":
        labels = PROTOCOL_LABELS.match(tail)
        if labels:
            found += [f"{name}.md {label}" for label in LABEL.findall(labels.group(0)) if label not in doc.labels]
        return found
    section, practice, title = SECTION.match(tail), PRACTICE.match(tail), TITLE.match(tail)
    if section and section.group(1) not in doc.sections:
        found.append(f"{name}.md section {section.group(1)}")
    if practice and practice.group(1) not in doc.practices:
        found.append(f"{name}.md practice {practice.group(1)}")
    if title and not any(title.group(1).lower() in heading for heading in doc.headings):
        found.append(f'{name}.md "{title.group(1)}"')
    return found


def test_docs_offer_the_labels_code_cites() -> None:
    """The parser above reads the docs as they are written (so the next test can trust it)."""
    protocol = read_doc(DOCS / "protocol.md")
    assert {"A", "A.2", "B.5", "C.4", "D.3", "E.3", "G", "H"} <= protocol.labels
    assert {f"F.{n}" for n in range(1, 35)} <= protocol.labels
    assert {f"H.{n}" for n in range(1, 9)} <= protocol.labels
    assert read_doc(DOCS / "testing.md").sections == {str(n) for n in range(1, 9)}
    assert read_doc(DOCS / "architecture.md").practices == {str(n) for n in range(1, 12)}
    assert problems_of(" F.35", "protocol", protocol) == ["protocol.md F.35"]
    assert problems_of(" A.2, F.7-F.15, H.8)", "protocol", protocol) == []
    old_style = "F.1" + ".3"  # the notes' subsection numbering; spelled in parts so a sweep leaves it alone
    assert problems_of(f" {old_style})", "protocol", protocol) == [f"protocol.md {old_style}"]


def test_every_cited_docs_section_exists() -> None:
    docs = {path.stem: read_doc(path) for path in DOCS.glob("*.md")}
    missing = []
    for path in [*text_files(*SCANNED, "docs"), ROOT / "README.md"]:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for match in CITATION.finditer(line):
                name = match.group(1)
                where = f"{path.relative_to(ROOT)}:{number}"
                if name not in docs:
                    missing.append(f"{where}: docs/{name}.md does not exist")
                    continue
                missing += [f"{where}: no {problem}" for problem in problems_of(line[match.end():], name, docs[name])]
    assert not missing, "\n".join(missing)


def test_code_cites_only_what_a_clone_has() -> None:
    """Sections of the research notes become ``docs/`` sections; tracker numbers go (the sentence
    says what it needs, or cites ``docs/``)."""
    found = []
    for path in text_files(*SCANNED):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for match in OUTSIDE.finditer(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not found, f"{len(found)} citations of what a clone does not have:\n" + "\n".join(found)
