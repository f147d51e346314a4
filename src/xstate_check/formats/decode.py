"""The ``decode`` view: a CPUID table's XSAVE layout as a table or JSON."""

from __future__ import annotations

import json

from xstate_check.cpuid import CpuidSet
from xstate_check.errors import printable
from xstate_check.layout import LEGACY_AND_HEADER, XsaveLayout
from xstate_check.xfeatures import XFEATURES, format_mask, name_of

__all__ = ["decode_json", "decode_rows", "decode_text"]

_XSAVE_FEATURES = ("XSAVEOPT", "XSAVEC", "XGETBV1", "XSAVES", "XFD")
_LEGACY = {0: (160, 0), 1: (256, 160)}  # x87 and SSE live in the legacy region


def decode_rows(layout: XsaveLayout) -> list[dict[str, object]]:
    """Return one row per component: number, name, size, offset, flags and where it is enabled."""
    rows: list[dict[str, object]] = []
    numbers = sorted({0, 1, *layout.components} if layout.xcr0_supported & 3 else layout.components)
    compacted = layout.compacted_offsets(layout.xcr0_supported | layout.xss_supported)
    for number in numbers:
        component = layout.components.get(number)
        if component is None:
            size, offset = _LEGACY.get(number, (0, 0))
            flags: list[str] = []
            supervisor = False
        else:
            size, offset = component.size, component.offset
            supervisor = component.supervisor
            flags = [
                name
                for name, on in (
                    ("supervisor", component.supervisor),
                    ("align64", component.aligned),
                    ("xfd", component.xfd),
                )
                if on
            ]
        where = [
            mask_name
            for mask_name, mask in (("XCR0", layout.xcr0_supported), ("XSS", layout.xss_supported))
            if mask >> number & 1
        ]
        rows.append(
            {
                "component": number,
                "name": name_of(number),
                "title": XFEATURES[number].title if number in XFEATURES else "",
                "size": size,
                "offset": None if supervisor else offset,
                "compacted_offset": compacted.get(number, None if number > 1 else offset),
                "flags": flags,
                "enabled_in": where,
            }
        )
    return rows


def _features(layout: XsaveLayout) -> list[str]:
    return [name for bit, name in enumerate(_XSAVE_FEATURES) if layout.xsave_features >> bit & 1]


def _sizes(layout: XsaveLayout) -> dict[str, int]:
    return {
        "current": layout.size_current,
        "max": layout.size_max,
        "computed_standard": layout.standard_size(layout.xcr0_supported),
        "compacted_current": layout.compacted_size_current,
        "computed_compacted": layout.compacted_size(
            layout.xcr0_supported | layout.xss_supported
        ),
    }


def decode_text(cpuid: CpuidSet, layout: XsaveLayout, *, title: str) -> str:
    """Return the layout as a readable table, preceded by the masks and sizes."""
    sizes = _sizes(layout)
    # The title (a path or a dump's source), vendor and brand string come from input.
    lines = [
        printable(title),
        printable(f"  vendor {cpuid.vendor or '?'}, signature {cpuid.signature:#010x}"
                  + (f", {cpuid.brand}" if cpuid.brand else "")),
        f"  XCR0 supported (0xD.0 EDX:EAX)  {format_mask(layout.xcr0_supported)}",
        f"  XSS supported  (0xD.1 EDX:ECX)  {format_mask(layout.xss_supported)}",
        f"  XSAVE features (0xD.1 EAX)      {' '.join(_features(layout)) or 'none'}",
        f"  standard size: {sizes['current']} for current XCR0 (EBX), {sizes['max']} for all"
        f" (ECX), {sizes['computed_standard']} computed from the subleaves",
        f"  compacted size: {sizes['compacted_current']} current (0xD.1 EBX),"
        f" {sizes['computed_compacted']} computed for XCR0|XSS",
        "",
        f"  {'#':>3}  {'name':<10} {'size':>6} {'offset':>7} {'compacted':>9}  "
        f"{'flags':<22} in",
    ]
    for row in decode_rows(layout):
        offset = "-" if row["offset"] is None else str(row["offset"])
        compacted = "-" if row["compacted_offset"] is None else str(row["compacted_offset"])
        flags = ",".join(row["flags"]) or "-"  # type: ignore[arg-type]
        where = "|".join(row["enabled_in"]) or "-"  # type: ignore[arg-type]
        lines.append(
            f"  {row['component']:>3}  {row['name']:<10} {row['size']:>6} {offset:>7} "
            f"{compacted:>9}  {flags:<22} {where}"
        )
    lines.append(f"  (legacy region and header: {LEGACY_AND_HEADER} bytes)")
    return "\n".join(lines) + "\n"


def decode_json(cpuid: CpuidSet, layout: XsaveLayout, *, title: str) -> str:
    """Return the layout as JSON (schema xstate-check-decode/1)."""
    document = {
        "schema": "xstate-check-decode/1",
        "source": title,
        "vendor": cpuid.vendor,
        "xcr0_supported": f"{layout.xcr0_supported:#x}",
        "xss_supported": f"{layout.xss_supported:#x}",
        "xsave_features": _features(layout),
        "sizes": _sizes(layout),
        "components": decode_rows(layout),
    }
    return json.dumps(document, indent=2) + "\n"
