"""What to change in the PCE so its workloads match the desired ones (pure).

Ownership is exact: a workload is this FlowExport's only when its `external_data_set` equals
the FlowExport's mark, character for character (the PCE's own filters match partially, so
they are never trusted for this). Only those are ever updated or deleted. An address held by
any other workload, managed (paired with a VEN) or not, is left to it: the desired workload
goes without that address, and without a workload when none is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowexport.workloads.desired import DesiredWorkload, canonical

Labels = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class PceWorkload:
    """The parts of a PCE workload the sync compares."""

    href: str
    name: str | None
    hostname: str | None
    interfaces: frozenset[tuple[str, str]]
    labels: frozenset[str]
    external_data_set: str | None
    external_data_reference: str | None
    managed: bool

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> PceWorkload | None:
        """A workload from the PCE's JSON, or None when it has no href."""
        href = item.get("href")
        if not isinstance(href, str) or not href:
            return None
        interfaces = set()
        for interface in item.get("interfaces") or []:
            if isinstance(interface, dict):
                address = canonical(str(interface.get("address") or ""))
                if address is not None:
                    interfaces.add((str(interface.get("name") or ""), address))
        labels = {
            str(label["href"])
            for label in item.get("labels") or []
            if isinstance(label, dict) and label.get("href")
        }
        managed = bool(_href(item.get("ven")) or _href(item.get("agent")))
        return cls(
            href=href,
            name=_text(item.get("name")),
            hostname=_text(item.get("hostname")),
            interfaces=frozenset(interfaces),
            labels=frozenset(labels),
            external_data_set=_text(item.get("external_data_set")),
            external_data_reference=_text(item.get("external_data_reference")),
            managed=managed,
        )

    @property
    def addresses(self) -> set[str]:
        """Its canonical addresses."""
        return {address for _, address in self.interfaces}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _href(value: Any) -> str | None:
    return value.get("href") if isinstance(value, dict) and value.get("href") else None


@dataclass
class Plan:
    """The changes one sync makes."""

    create: list[DesiredWorkload] = field(default_factory=list)
    update: list[tuple[PceWorkload, DesiredWorkload]] = field(default_factory=list)
    delete: list[PceWorkload] = field(default_factory=list)
    #: Addresses left to another workload: address -> that workload's href.
    covered: dict[str, str] = field(default_factory=dict)
    #: Every address of a workload that is not ours: address -> that workload's href.
    held: dict[str, str] = field(default_factory=dict)
    #: This FlowExport's workloads once the plan is applied, by ref.
    kept: dict[str, PceWorkload] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        """How many workloads it changes."""
        return len(self.create) + len(self.update) + len(self.delete)


def ours(existing: Iterable[PceWorkload], mark: str) -> dict[str, list[PceWorkload]]:
    """This FlowExport's workloads by ref (several when a lost answer made duplicates)."""
    found: dict[str, list[PceWorkload]] = {}
    for workload in existing:
        if workload.external_data_set == mark and not workload.managed:
            ref = workload.external_data_reference or ""
            found.setdefault(ref, []).append(workload)
    for items in found.values():
        items.sort(key=lambda w: w.href)
    return found


def held_by_others(existing: Iterable[PceWorkload], mark: str) -> dict[str, str]:
    """Every address of a workload that is not this FlowExport's, to that workload's href."""
    held: dict[str, str] = {}
    for workload in existing:
        if workload.external_data_set != mark or workload.managed:
            for address in sorted(workload.addresses):
                held.setdefault(address, workload.href)
    return held


def make_plan(
    desired: Sequence[DesiredWorkload],
    existing: Iterable[PceWorkload],
    mark: str,
    labels: Labels,
    *,
    delete_gone: bool,
    keep: Iterable[str] = (),
    drop: Iterable[str] = (),
) -> Plan:
    """The changes that make this FlowExport's workloads (marked `mark`) match `desired`.

    `labels` maps (key, value) to a label href and must hold every desired label. Workloads
    of ours not desired are deleted when `delete_gone`, else kept as they are; refs in `keep`
    are never deleted; refs in `drop` (not desired) are deleted whatever `delete_gone` says.
    """
    existing = list(existing)
    mine = ours(existing, mark)
    held = held_by_others(existing, mark)
    plan = Plan(held=held)
    kept_refs = set(keep)
    dropped = set(drop)
    for want in desired:
        interfaces = []
        for name, address in want.interfaces:
            holder = held.get(address)
            if holder is None:
                interfaces.append((name, address))
            else:
                plan.covered[address] = holder
        found = mine.pop(want.ref, [])
        current, duplicates = (found[0], found[1:]) if found else (None, [])
        plan.delete.extend(duplicates)
        if not interfaces:
            if current is not None:
                plan.delete.append(current)  # another workload took all its addresses
            continue
        wanted = DesiredWorkload(
            want.ref, want.name, want.hostname, tuple(interfaces), want.labels, want.description
        )
        if current is None:
            plan.create.append(wanted)
            continue
        if _differs(current, wanted, labels):
            plan.update.append((current, wanted))
        plan.kept[want.ref] = current
    for ref, found in sorted(mine.items()):
        if (delete_gone and ref not in kept_refs) or ref in dropped:
            plan.delete.extend(found)
        else:
            plan.kept[ref] = found[0]
            plan.delete.extend(found[1:])
    return plan


def _differs(current: PceWorkload, wanted: DesiredWorkload, labels: Labels) -> bool:
    return (
        current.name != wanted.name
        or (current.hostname or None) != wanted.hostname
        or current.interfaces != frozenset(wanted.interfaces)
        or current.labels != frozenset(labels[pair] for pair in wanted.labels)
    )


def workload_body(
    wanted: DesiredWorkload, mark: str, labels: Labels, href: str | None = None
) -> dict[str, Any]:
    """The JSON of a workload to create (or, with `href`, to update)."""
    body: dict[str, Any] = {"href": href} if href else {}
    body.update(
        {
            "name": wanted.name,
            "hostname": wanted.hostname or "",
            "interfaces": [
                {"name": name, "address": address, "link_state": "up"}
                for name, address in wanted.interfaces
            ],
            "labels": [{"href": labels[pair]} for pair in wanted.labels],
        }
    )
    if href is None:
        body.update(
            {
                "description": wanted.description,
                "external_data_set": mark,
                "external_data_reference": wanted.ref,
            }
        )
    return body
