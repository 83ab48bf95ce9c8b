"""The paper's variants: which index a checkpoint uses and which training parts it had."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    index_source: str  # "dual" or "semantic"
    use_gct: bool
    use_aat: bool


VARIANTS = {
    v.name: v
    for v in (
        Variant("full", "dual", True, True),
        Variant("wo_dki", "semantic", True, True),
        Variant("wo_gct", "dual", False, True),
        Variant("wo_aat", "dual", True, False),
    )
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    return VARIANTS[name]
