"""``thermofs compact``: what a compaction did, in words (the compaction itself is fs/compaction.py)."""

from __future__ import annotations

from thermofs.fs.compaction import CompactReport


def render(report: CompactReport) -> str:
    mib = 1 << 20
    lines = [(f"compacted: {report.segments_rewritten} of {report.segments_seen} segments rewritten, "
              f"{report.frames_moved} frames ({report.bytes_moved / mib:.1f} MiB) moved, "
              f"{report.segments_removed} segments ({report.bytes_reclaimed / mib:.1f} MiB) deleted")]
    if report.unaccounted_bytes:
        lines.append(f"{report.unaccounted_bytes} bytes of frames left by a crash were found and reclaimed")
    if report.frames_superseded:
        lines.append(f"{report.frames_superseded} chunks changed while being copied (their copies are garbage)")
    for item in report.corrupt:
        lines.append(f"left in place, damaged: {item} (run thermofs fsck)")
    if report.interrupted:
        lines.append("interrupted: run compact again to finish (nothing was lost)")
    return "\n".join(lines)
