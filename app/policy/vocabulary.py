"""The partnership's vocabulary: agencies (with groups), purposes and fields.

Purposes and fields are trees of dotted names: a name's parent is the name
before its last dot. A grant for a node covers the node and its descendants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.errors import InvalidParams

FieldClass = Literal["personal", "special-category", "criminal-offence"]
NameKind = Literal["agency", "purpose", "field"]
FIELD_CLASSES: tuple[FieldClass, ...] = ("personal", "special-category", "criminal-offence")
# The code systems a purpose may be coded in (`codes: {hl7-purpose-of-use: TREAT}`), by the
# name the vocabulary uses, with the system's URI: HL7's purpose of use is v3 ActReason.
PURPOSE_CODE_SYSTEMS: Mapping[str, str] = {
    "hl7-purpose-of-use": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
}


class VocabularyError(ValueError):
    """The vocabulary document is malformed."""


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Tree:
    """A tree of dotted names with precomputed descendants and lineages."""

    names: tuple[str, ...]
    descendants: Mapping[str, frozenset[str]]  # a name and every name below it
    lineage: Mapping[str, frozenset[str]]  # a name and every name above it
    leaves_below: Mapping[str, tuple[str, ...]]  # the leaves at or under a name, in order
    titles: Mapping[str, str] = field(default_factory=dict)  # display names, where given

    @classmethod
    def of(
        cls, names: Iterable[str], catalogue: str, titles: Mapping[str, str] | None = None
    ) -> Tree:
        ordered = tuple(names)
        known = set(ordered)
        if len(known) != len(ordered):
            raise VocabularyError(f"{catalogue}: duplicate names")
        below: dict[str, set[str]] = {name: {name} for name in ordered}
        above: dict[str, set[str]] = {name: {name} for name in ordered}
        for name in ordered:
            parent = name.rpartition(".")[0]
            if parent and parent not in known:
                raise VocabularyError(f"{catalogue}: '{name}' has no parent '{parent}'")
            while parent:
                below[parent].add(name)
                above[name].add(parent)
                parent = parent.rpartition(".")[0]
        leaves = [name for name in ordered if len(below[name]) == 1]
        return cls(
            ordered,
            descendants={name: frozenset(sub) for name, sub in below.items()},
            lineage={name: frozenset(line) for name, line in above.items()},
            leaves_below={
                name: tuple(leaf for leaf in leaves if leaf in below[name]) for name in ordered
            },
            titles=dict(titles or {}),
        )

    def __contains__(self, name: object) -> bool:
        return name in self.descendants

    def covers(self, granted: str, asked: str) -> bool:
        """True when a grant of `granted` covers `asked` (itself or a descendant)."""
        return asked in self.descendants.get(granted, ())

    def leaves(self) -> tuple[str, ...]:
        return tuple(name for name in self.names if len(self.descendants[name]) == 1)


@dataclass(frozen=True)
class Vocabulary:
    agencies: Mapping[str, Agency]
    purposes: Tree
    fields: Tree
    field_classes: Mapping[str, FieldClass]
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Each purpose's codes in outside code systems ({system name: code}), its own or, where
    # it gives none, its parent's; a purpose with none has no entry.
    purpose_codes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def expand_agencies(self, names: Iterable[str]) -> frozenset[str]:
        """Agency ids named directly or through one of their groups."""
        found: set[str] = set()
        for name in names:
            if name in self.agencies:
                found.add(name)
            else:
                found |= self.groups.get(name, frozenset())
        return frozenset(found)

    def is_agency_or_group(self, name: str) -> bool:
        return name in self.agencies or name in self.groups

    def classes_within(self, field_name: str) -> frozenset[FieldClass]:
        """Classes of a field and of every field under it."""
        return frozenset(self.field_classes[name] for name in self.fields.descendants[field_name])

    def refuse_unknown(self, named: Iterable[tuple[str, str | None, NameKind]]) -> None:
        """Raise InvalidParams naming every place whose agency, purpose or field is not in
        the vocabulary (a name of None is not given): a misspelt name answered would
        answer a different question."""
        known: dict[NameKind, Mapping[str, object] | Tree] = {
            "agency": self.agencies,
            "purpose": self.purposes,
            "field": self.fields,
        }
        unknown = [
            (place, f"'{name}' is not {'an' if kind == 'agency' else 'a'} {kind} in the vocabulary")
            for place, name, kind in named
            if name is not None and name not in known[kind]
        ]
        if unknown:
            raise InvalidParams(unknown)


def _titles(entries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The display names of the entries that give one (`name`)."""
    return {str(entry["id"]): str(entry["name"]) for entry in entries if "name" in entry}


def _purpose_codes(
    entries: Iterable[Mapping[str, Any]], purposes: Tree
) -> dict[str, dict[str, str]]:
    """Each purpose's codes: its own `codes`, else its parent's. A code system not in
    PURPOSE_CODE_SYSTEMS, or a code that is not a word, is refused, naming the purpose."""
    declared: dict[str, dict[str, str]] = {}
    for entry in entries:
        name, codes = str(entry["id"]), entry.get("codes")
        if codes is None:
            continue
        if not isinstance(codes, Mapping) or not codes:
            raise VocabularyError(
                f"purposes: '{name}' codes must map a code system to a code, "
                "e.g. {hl7-purpose-of-use: TREAT}"
            )
        for system, code in codes.items():
            if system not in PURPOSE_CODE_SYSTEMS:
                known = ", ".join(sorted(PURPOSE_CODE_SYSTEMS))
                raise VocabularyError(
                    f"purposes: '{name}' has a code in unknown code system '{system}' "
                    f"(known: {known})"
                )
            if not isinstance(code, str) or not code or code != code.strip() or " " in code:
                raise VocabularyError(f"purposes: '{name}' has a malformed {system} code {code!r}")
        declared[name] = {str(system): code for system, code in codes.items()}
    resolved: dict[str, dict[str, str]] = {}
    for name in sorted(purposes.names, key=lambda n: n.count(".")):  # parents first
        parent = name.rpartition(".")[0]
        own = declared.get(name) or resolved.get(parent)
        if own:
            resolved[name] = own
    return resolved


def parse_vocabulary(document: Mapping[str, Any]) -> Vocabulary:
    """Build a Vocabulary from its YAML document, refusing anything malformed."""
    try:
        agencies = {
            str(entry["id"]): Agency(
                id=str(entry["id"]),
                name=str(entry.get("name", entry["id"])),
                groups=tuple(str(g) for g in entry.get("groups", [])),
            )
            for entry in document["agencies"]
        }
        purpose_entries = list(document["purposes"])
        purposes = Tree.of(
            (str(entry["id"]) for entry in purpose_entries), "purposes", _titles(purpose_entries)
        )
        field_entries = list(document["fields"])
        fields = Tree.of(
            (str(entry["id"]) for entry in field_entries), "fields", _titles(field_entries)
        )
    except (KeyError, TypeError) as exc:
        raise VocabularyError(f"vocabulary: missing or malformed entry ({exc})") from exc

    groups: dict[str, set[str]] = {}
    for agency in agencies.values():
        for group in agency.groups:
            if group in agencies:
                raise VocabularyError(f"agencies: group '{group}' is also an agency id")
            groups.setdefault(group, set()).add(agency.id)

    declared = {str(entry["id"]): entry.get("class") for entry in field_entries}
    classes: dict[str, FieldClass] = {}
    for name in sorted(fields.names, key=lambda n: n.count(".")):  # parents first
        own = declared[name]
        parent = name.rpartition(".")[0]
        if own is None:
            if not parent:
                raise VocabularyError(f"fields: top-level field '{name}' needs a class")
            classes[name] = classes[parent]
        elif own in FIELD_CLASSES:
            classes[name] = own
        else:
            raise VocabularyError(f"fields: '{name}' has unknown class '{own}'")

    return Vocabulary(
        agencies=agencies,
        purposes=purposes,
        fields=fields,
        field_classes=classes,
        groups={group: frozenset(members) for group, members in groups.items()},
        purpose_codes=_purpose_codes(purpose_entries, purposes),
    )
