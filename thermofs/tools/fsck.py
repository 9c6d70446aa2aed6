"""``thermofs fsck``: check an unmounted store, and with ``repair`` fix what can be fixed without guessing.

Checks, from one LMDB snapshot:

- every metadata record against its checksum (docs/DESIGN.md, invariant 6): a damaged record is
  reported with what depends on it;
- every chunk's frame, decoded with the volume's own dictionaries and models: entry lengths, segment
  present with a header naming this volume, frame inside the segment file, header, decode, xxh3
  against the entry (inline frames too);
- the namespace: directory entries in missing or non-directory parents, entries naming missing inodes or
  the wrong file type, directories with more than one name, inodes no path from the root reaches (lost),
  link counts, directory parent pointers, each inode's count of chunk or directory entries;
- leftovers of missing inodes (chunks, symlink targets, xattrs, orphan records), chunks past a file's end;
- the running totals ``stats`` shows, recomputed from the whole map, and each segment's garbage record
  against what the segment really holds (its frame bytes minus its live frames).

Repairs (all in one write transaction) never delete the only pointer to data and never guess:

- chunks or a symlink target whose inode is missing get a recreated inode (root's, mode 0600), under
  the name that still points at it if one does; bad directory entries are removed (an entry naming a
  damaged inode is kept); lost inodes are linked into ``/lost+found`` as ``#INO`` (created if needed,
  as e2fsck does);
- a file whose intact chunks reach past its size is extended to cover them, never cut;
- link counts, parent pointers, totals and garbage records are set to the recomputed values; damaged
  records that only hold totals, garbage figures, orphan marks or access hints are rewritten or dropped;
  xattrs of missing inodes are dropped.

A damaged frame, a damaged record of data (an inode, a directory entry, a chunk entry, a symlink, an
xattr, a blob) and a file missing one of its chunk records are not repaired: only a guess could stand
in for them. fsck names the file and what is lost and keeps everything as it is, so reads of it keep
failing with EIO; dropping the entry would make them read as zeros or vanish, silently turning a
detected loss into wrong data. Restore the file (or overwrite the range) to clear it.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thermofs.codecs import CodecTable
from thermofs.daemon.assembly import build_segments
from thermofs.daemon.lock import lock_store
from thermofs.daemon.options import MountOptions
from thermofs.fs.chunkstore import ChunkStore
from thermofs.fs.durability import needs_restore, restore
from thermofs.fs.errors import CorruptChunk, MetaError
from thermofs.fs.meta import (
    COUNTERS,
    HISTORY_COUNTERS,
    INLINE_SEGMENT,
    ROOT_INO,
    U32,
    U64,
    CorruptRecord,
    DamagedRecord,
    Inode,
    MetaStore,
    Txn,
    chunk_totals,
)
from thermofs.fs.resources import load_resources
from thermofs.fs.segments import SegmentStore, segment_name
from thermofs.fs.store import DamagedMetadata, open_meta, read_config, secure
from thermofs.fs.upgrade import upgrade
from thermofs.progress import Progress

LOST_FOUND = b"lost+found"
EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR = 0, 1, 2
# Damaged records that hold nothing but what fsck recomputes (totals, garbage figures), marks that a
# lost inode's link into /lost+found replaces (orphans), or policy hints (temps): dropped by --repair.
REBUILT_DBS = ("counters", "garbage", "orphans", "temps")
# Damaged records of data: kept (what depends on them reads as EIO), never guessed at.
DATA_DBS = ("inodes", "dirents", "chunks", "symlinks", "xattrs", "blobs")
# What a damaged record of each sub-database means for the user.
CONSEQUENCE = {
    "inodes": "the file's attributes and data read as EIO",
    "dirents": "this name reads as EIO (and listing its directory)",
    "chunks": "this chunk reads as EIO (and holes of its file)",
    "symlinks": "the symlink reads as EIO",
    "xattrs": "this xattr reads as EIO",
    "blobs": "chunks coded with this dictionary or model read as EIO",
    "counters": "a running total is unknown (recomputed by --repair)",
    "garbage": "a segment's garbage figure is unknown (recomputed by --repair)",
    "orphans": "an unlink-while-open mark is lost (--repair drops it)",
    "temps": "an access-history hint is lost (--repair drops it)",
}


@dataclass
class Problem:
    kind: str
    path: str
    message: str
    fixable: bool
    repaired: bool = False
    ino: int | None = None  # the inode the path names, so it can be shown again after a repair


@dataclass
class FsckReport:
    store: str
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Not damage: what a crash normally leaves (frames between append and commit, files unlinked
    # while open); the next mount or compaction reclaims it, --repair accounts it now.
    notes: list[str] = field(default_factory=list)
    repair: bool = False

    @property
    def remaining(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]

    @property
    def exit_code(self) -> int:
        return EXIT_DAMAGE if self.remaining else EXIT_CLEAN

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "repair": self.repair, "checked": self.checked,
                "counts": self.counts(), "remaining": len(self.remaining),
                "repaired": sum(p.repaired for p in self.problems), "exit_code": self.exit_code,
                "problems": [asdict(p) for p in self.problems], "notes": self.notes}


# -- the namespace as the snapshot has it -------------------------------------------------------------

@dataclass
class _Tree:
    inodes: dict[int, Inode]
    damaged: set[int]  # inodes whose record exists but failed verification
    # (parent, name) -> (child, type bits) of the entries that are sound
    dirents: dict[tuple[int, bytes], tuple[int, int]]
    names: dict[int, list[tuple[int, bytes]]]  # child -> its (parent, name)s, sound entries only
    shown: dict[int, list[tuple[int, bytes]]]  # child -> every (parent, name) naming it, for paths

    def path(self, ino: int) -> str:
        parts: list[bytes] = []
        seen = {ino}
        while ino != ROOT_INO:
            names = self.names.get(ino) or self.shown.get(ino)
            if not names:
                if ino not in self.inodes:
                    return f"<inode {ino}, {'damaged' if ino in self.damaged else 'missing'}>"
                return f"<inode {ino}, unreachable>" + ("/" + os.fsdecode(b"/".join(reversed(parts)))
                                                         if parts else "")
            parent, name = names[0]
            parts.append(name)
            if parent in seen:
                return f"<inode {ino}, in a directory cycle>"
            seen.add(parent)
            ino = parent
        return "/" + os.fsdecode(b"/".join(reversed(parts)))

    def reachable(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for (parent, _name), (child, _kind) in self.dirents.items():
            children.setdefault(parent, []).append(child)
        seen, todo = {ROOT_INO}, [ROOT_INO]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen


def _tree(t: Txn, problems: list[Problem] | None, damaged: list[DamagedRecord]) -> _Tree:
    """The sound part of the namespace; with ``problems``, report every unsound directory entry.
    Damaged inode and directory entry records are added to ``damaged``."""
    inodes = {i.ino: i for i in t.inodes(damaged=damaged)}
    bad_inodes = {U64.unpack(r.key)[0] for r in damaged if r.db == "inodes" and len(r.key) == 8}
    tree = _Tree(inodes, bad_inodes, {}, {}, {})
    raw = list(t.all_dirents(damaged=damaged))
    # Names first, so a path can be shown for entries of a directory that has other problems.
    for parent, name, child, _kind in raw:
        tree.shown.setdefault(child, []).append((parent, name))

    def bad(kind: str, parent: int, name: bytes, message: str) -> None:
        if problems is not None:
            where = tree.path(parent)
            problems.append(Problem(kind, where.rstrip("/") + "/" + os.fsdecode(name), message, True))

    for parent, name, child, kind in raw:
        if parent in bad_inodes or child in bad_inodes:
            # Sound entry, damaged inode at one end: kept as it is, and the tree still runs through
            # it (the damaged inode reads as EIO; what lies below it is reachable).
            tree.dirents[(parent, name)] = (child, kind)
            tree.names.setdefault(child, []).append((parent, name))
            continue
        p = inodes.get(parent)
        if p is None or not stat.S_ISDIR(p.mode):
            bad("dirent-bad-parent", parent, name, f"entry in inode {parent}, which is "
                f"{'missing' if p is None else 'not a directory'}")
            continue
        c = inodes.get(child)
        if c is None:
            bad("dirent-dangling", parent, name, f"entry names inode {child}, which does not exist")
            continue
        if kind != stat.S_IFMT(c.mode):
            bad("dirent-type", parent, name, f"entry says file type {kind:o}, inode {child} is "
                f"{stat.S_IFMT(c.mode):o}")
        tree.dirents[(parent, name)] = (child, stat.S_IFMT(c.mode))
        tree.names.setdefault(child, []).append((parent, name))
    # A directory has one name: keep the one its parent pointer agrees with.
    for ino, names in list(tree.names.items()):
        inode = inodes.get(ino)
        if inode is None:
            continue  # damaged
        if stat.S_ISDIR(inode.mode) and (len(names) > 1 or ino == ROOT_INO):
            keep = [] if ino == ROOT_INO else \
                [next((n for n in names if n[0] == inode.parent), names[0])]
            for extra in [n for n in names if n not in keep]:
                bad("dirent-extra-dir-name", extra[0], extra[1], f"a second name of directory inode {ino}")
                del tree.dirents[extra]
            tree.names[ino] = keep
    return tree


def _damage_problems(tree: _Tree, damaged: list[DamagedRecord], chunk_size: int) -> list[Problem]:
    """One problem per damaged record, saying what it holds and what now reads as EIO."""
    out = []
    for r in damaged:
        owner = U64.unpack(r.key[:8])[0] if len(r.key) >= 8 and r.db not in ("counters", "garbage", "blobs") else None
        if r.db == "dirents" and owner is not None:
            where = tree.path(owner).rstrip("/") + "/" + os.fsdecode(r.key[8:])
        elif r.db == "chunks" and owner is not None and len(r.key) == 16:
            index = U64.unpack(r.key[8:])[0]
            where = f"{tree.path(owner)} chunk {index} (bytes {index * chunk_size}-{(index + 1) * chunk_size - 1})"
        elif r.db == "garbage" and len(r.key) == 4:
            where = segment_name(U32.unpack(r.key)[0])
        elif r.db == "counters":
            where = f"counter {os.fsdecode(r.key)}"
        elif r.db == "blobs" and len(r.key) == 5:
            where = f"{'dictionary' if r.key[0] == 1 else 'model'} {U32.unpack(r.key[1:])[0]}"
        else:
            where = tree.path(owner) if owner is not None else f"{r.db} key {r.key.hex()}"
        out.append(Problem("record-damaged", where, f"{r.db} record: {r.why}; "
                           f"{CONSEQUENCE.get(r.db, 'it is not used')}", r.db in REBUILT_DBS, ino=owner))
    return out


# -- totals ---------------------------------------------------------------------------------------------

def _totals(t: Txn, tree: _Tree, sizes: dict[int, int],
            headers: dict[int, int]) -> tuple[dict[str, int], dict[int, int]]:
    """(every running total as it must be, true garbage bytes per existing segment)."""
    want: dict[str, int] = {name: 0 for name in COUNTERS if name not in HISTORY_COUNTERS}
    live: dict[int, int] = {}
    for _ino, _index, e, _inline in t.all_chunks(damaged=[]):
        for name, value in chunk_totals(e).items():
            want[name] = want.get(name, 0) + value
        if e.segment in sizes and e.offset + e.frame_len <= sizes[e.segment]:  # dangling: no bytes
            live[e.segment] = live.get(e.segment, 0) + e.frame_len
    for inode in tree.inodes.values():
        if inode.nlink > 0 and not stat.S_ISDIR(inode.mode):
            want["files"] += 1
            if stat.S_ISREG(inode.mode):
                want["logical_bytes"] += inode.size
    for ino in t.owners("xattrs"):
        for xname in t.xattr_names(ino, damaged=[]):
            key = "xattr/" + os.fsdecode(xname)
            want[key] = want.get(key, 0) + 1
    garbage = {seg: max(0, size - headers.get(seg, 0) - live.get(seg, 0)) for seg, size in sizes.items()}
    want["garbage_bytes"] = sum(garbage.values())
    return want, garbage


# -- checks ---------------------------------------------------------------------------------------------

@dataclass
class _Frames:
    """What the frame check found that a repair acts on."""

    verified: int = 0
    # ino -> the size that covers its intact chunks past its end
    extend: dict[int, int] = field(default_factory=dict)
    damaged_chunks: bool = False  # a chunk record failed verification: live bytes are unknown


def _check_frames(t: Txn, tree: _Tree, chunks: ChunkStore, sizes: dict[int, int], problems: list[Problem],
                  damaged: list[DamagedRecord], progress: Progress | None) -> _Frames:
    """Verify every chunk's frame."""
    total = t.entry_count("chunks")
    chunk_size = chunks.chunk_size
    missing: dict[int, set[int]] = {}
    found = _Frames()
    extents: dict[int, list[tuple[int, int, int, int]]] = {}
    before = len(damaged)
    for n, (ino, index, e, inline) in enumerate(t.all_chunks(damaged=damaged)):
        if progress is not None and n % 256 == 0:
            progress(n, total)
        inode = tree.inodes.get(ino)
        where = tree.path(ino)
        span = f"chunk {index} (bytes {index * chunk_size}-{index * chunk_size + e.raw_len - 1})"
        if ino in tree.damaged:
            continue  # its inode's damage is reported; the chunk is kept as it is
        if inode is None:
            problems.append(Problem("chunk-without-file", where, f"{span}: owner inode {ino} is missing "
                                    f"(--repair recreates it in /lost+found)", True, ino=ino))
        elif not stat.S_ISREG(inode.mode):
            problems.append(Problem("chunk-without-file", where, f"{span}: owner inode {ino} is not a "
                                    f"regular file (kept)", False, ino=ino))
            continue
        place = "inline" if e.segment == INLINE_SEGMENT else f"{segment_name(e.segment)} at {e.offset}"
        if e.segment != INLINE_SEGMENT:
            if e.segment not in sizes:
                missing.setdefault(e.segment, set()).add(ino)
                problems.append(Problem("chunk-dangling", where, f"{span}: its segment "
                                        f"{segment_name(e.segment)} is missing", False, ino=ino))
                continue
            if e.offset + e.frame_len > sizes[e.segment]:
                problems.append(Problem("chunk-dangling", where, f"{span}: {place}, {e.frame_len} bytes, "
                                        f"ends past the segment's end ({sizes[e.segment]} bytes)", False,
                                        ino=ino))
                continue
            extents.setdefault(e.segment, []).append((e.offset, e.frame_len, ino, index))
        try:
            chunks.read_frame(e, inline)
            found.verified += 1
        except CorruptChunk as err:
            problems.append(Problem("chunk-corrupt", where, f"{span}: {place}: {err}", False, ino=ino))
            continue
        if inode is not None and index * chunk_size >= inode.size and e.raw_len:
            end = index * chunk_size + e.raw_len
            found.extend[ino] = max(found.extend.get(ino, inode.size), end)
            problems.append(Problem("chunk-past-eof", where, f"{span}: intact, beyond the file's size "
                                    f"{inode.size} (--repair extends the file to keep it)", True, ino=ino))
    found.damaged_chunks = len(damaged) > before
    if progress is not None:
        progress(total, total)
    for seg, owners in sorted(missing.items()):
        problems.append(Problem("segment-missing", segment_name(seg), f"segment file is gone; chunks of "
                                f"{len(owners)} file(s) pointed into it (listed as chunk-dangling)", False))
    for seg, spans in extents.items():
        spans.sort()
        for (off_a, len_a, ino_a, idx_a), (off_b, _len_b, ino_b, idx_b) in itertools.pairwise(spans):
            if off_a + len_a > off_b:
                problems.append(Problem("chunk-shared-frame", tree.path(ino_b),
                                        f"chunk {idx_b} overlaps the frame of inode {ino_a} chunk {idx_a} in "
                                        f"{segment_name(seg)}: freeing one would destroy the other", False,
                                        ino=ino_b))
    return found


def _check_segments(segments: SegmentStore, sizes: dict[int, int], problems: list[Problem],
                    notes: list[str]) -> None:
    """Every segment's header names this volume and this segment."""
    for seg, size in sorted(sizes.items()):
        if size == 0:
            notes.append(f"{segment_name(seg)} is empty (a crash as it was started); compaction removes it")
            continue
        why = segments.check_header(seg)
        if why is not None:
            problems.append(Problem("segment-header", segment_name(seg), f"{why}: its frames are not used "
                                    f"(chunks in it are listed as chunk-corrupt)", False))


def _check_structure(t: Txn, tree: _Tree, sizes: dict[int, int], headers: dict[int, int],
                     problems: list[Problem], notes: list[str], damaged: list[DamagedRecord],
                     damaged_chunks: bool) -> None:
    """Namespace, leftovers of missing inodes, link counts, entry counts, parents, totals, garbage."""
    inodes = tree.inodes
    known = set(inodes) | tree.damaged
    pending = {ino for ino, parent, _name in t.orphans(damaged=damaged) if not parent}
    for ino, _parent, _name in t.orphans(damaged=[]):
        if ino not in known:
            problems.append(Problem("orphan-record", f"<inode {ino}, missing>",
                                    "orphan record of an inode that does not exist", True))
    chunk_owners = t.owners("chunks")
    for ino in sorted(t.owners("symlinks") - known):
        problems.append(Problem("leftover", f"<inode {ino}, missing>", "symlink target of an inode that does "
                                "not exist (--repair recreates the symlink in /lost+found)", True))
    for ino in sorted(t.owners("xattrs") - known - chunk_owners - t.owners("symlinks")):
        problems.append(Problem("leftover", f"<inode {ino}, missing>", "xattrs of an inode that does "
                                "not exist", True))
    reach = tree.reachable()
    for ino in sorted(set(inodes) - reach):
        inode = inodes[ino]
        if ino in pending and inode.nlink == 0 and not tree.names.get(ino):
            notes.append(f"inode {ino} was unlinked while open; the next mount reclaims it")
            continue
        problems.append(Problem("lost-inode", tree.path(ino), f"inode {ino} ({_kind(inode)}, "
                                f"{inode.size} bytes) is not reachable from the root", True, ino=ino))
    subdirs: dict[int, int] = {}
    for (parent, _name), (_child, kind) in tree.dirents.items():
        if stat.S_ISDIR(kind):
            subdirs[parent] = subdirs.get(parent, 0) + 1
    for ino in sorted(reach & set(inodes)):
        inode = inodes[ino]
        if stat.S_ISDIR(inode.mode):
            want = 2 + subdirs.get(ino, 0)
            parent = ROOT_INO if ino == ROOT_INO else tree.names[ino][0][0]
            if inode.parent != parent:
                problems.append(Problem("dir-parent", tree.path(ino), f"parent pointer says {inode.parent}, "
                                        f"its entry is in {parent}", True))
        else:
            want = len(tree.names.get(ino, ()))
        if inode.nlink != want:
            problems.append(Problem("nlink", tree.path(ino), f"link count {inode.nlink}, should be {want}",
                                    True))
    for ino, inode in sorted(inodes.items()):
        records = t.records_of(inode)
        if records != inode.count:
            what = "directory entries" if stat.S_ISDIR(inode.mode) else "chunk entries"
            problems.append(Problem("count", tree.path(ino), f"its inode counts {inode.count} {what}, "
                                    f"{records} exist: " + ("some are lost; reads that would need them "
                                                            "give EIO (restore the file)" if records < inode.count
                                                            else "more than it made (kept)"), False, ino=ino))
    want_totals, garbage = _totals(t, tree, sizes, headers)
    records_by_seg = t.garbage_by_segment(damaged=damaged)
    # The total must equal its records; records that miss a crash's frames are a note below.
    want_totals["garbage_bytes"] = sum(records_by_seg.values())
    have = t.counters(damaged=damaged)
    for counter in sorted(set(want_totals) | {k for k in have if k not in HISTORY_COUNTERS}):
        if have.get(counter, 0) != want_totals.get(counter, 0):
            problems.append(Problem("counter", counter, f"running total {have.get(counter, 0)}, recomputed "
                                    f"{want_totals.get(counter, 0)}", True))
    top = max(known, default=ROOT_INO)
    if have.get("next_ino", 0) <= top:
        problems.append(Problem("counter", "next_ino", f"next inode number {have.get('next_ino', 0)} is "
                                f"not above the highest inode {top}", True))
    if damaged_chunks:
        notes.append("garbage records not checked: a damaged chunk record may point into any segment")
        return
    for seg in sorted(set(records_by_seg) | set(sizes)):
        rec, real = records_by_seg.get(seg, 0), garbage.get(seg)
        if real is None:
            problems.append(Problem("garbage-record", segment_name(seg), f"garbage record of {rec} bytes "
                                    f"for a segment that does not exist", True))
        elif rec < real:
            notes.append(f"{segment_name(seg)}: {real - rec} bytes of frames no entry points at and no "
                         f"garbage record knows (left by a crash between append and commit)")
        elif rec > real:
            # Worse than a wrong figure: a segment whose record covers it is a deletion candidate
            # (fs/reclaim.py still checks the chunk map first).
            problems.append(Problem("garbage-record", segment_name(seg), f"garbage record of {rec} bytes, "
                                    f"but only {real} bytes of the segment are dead", True))


def _kind(inode: Inode) -> str:
    return "directory" if stat.S_ISDIR(inode.mode) else "file" if stat.S_ISREG(inode.mode) else \
        "symlink" if stat.S_ISLNK(inode.mode) else "special file"


# -- repair ---------------------------------------------------------------------------------------------

def _repair(meta: MetaStore, sizes: dict[int, int], headers: dict[int, int], chunk_size: int,
            frames: _Frames) -> None:
    """Fix everything fixable, in one write transaction, from the state inside it."""
    with meta.write() as t:
        for db in DATA_DBS:
            t.rehome_damaged(db)  # kept, but in key order again: searches around them work
        for db in REBUILT_DBS:
            t.drop_damaged(db)  # rebuilt below, or a lost mark or hint
        damaged: list[DamagedRecord] = []
        tree = _tree(t, None, damaged)
        _recreate_missing(t, tree, chunk_size)  # first: an entry naming a recreated inode keeps its name
        tree = _tree(t, None, [])
        for parent, name, child, _kind in list(t.all_dirents(damaged=[])):
            if (parent, name) not in tree.dirents and parent not in tree.damaged and child not in tree.damaged:
                t.del_dirent(parent, name)
        for (parent, name), (child, kind) in tree.dirents.items():
            t.put_dirent(parent, name, child, kind)  # rewrites a wrong file type, else the same
        for ino in sorted(t.owners("xattrs") - set(tree.inodes) - tree.damaged):
            for key_name in list(t.xattr_names(ino, damaged=[])):
                t.del_xattr(ino, key_name)
        for ino, size in frames.extend.items():
            inode = tree.inodes.get(ino)
            if inode is not None and size > inode.size:
                t.put_inode(inode.evolve(size=size))
                tree.inodes[ino] = inode.evolve(size=size)
        for ino, _parent, _name in t.orphans():
            if ino not in tree.inodes and ino not in tree.damaged:
                t.del_orphan(ino)
        _attach_lost(t, tree)
        # Link counts and parent pointers from the repaired namespace.
        tree = _tree(t, None, [])
        subdirs: dict[int, int] = {}
        for (parent, _name), (_child, kind) in tree.dirents.items():
            if stat.S_ISDIR(kind):
                subdirs[parent] = subdirs.get(parent, 0) + 1
        pending = {ino for ino, parent, _name in t.orphans() if not parent}
        for ino, inode in tree.inodes.items():
            if stat.S_ISDIR(inode.mode):
                if ino != ROOT_INO and not tree.names.get(ino):
                    continue  # its only name is damaged: left as it is
                fixed = inode.evolve(nlink=2 + subdirs.get(ino, 0),
                                     parent=ROOT_INO if ino == ROOT_INO else tree.names[ino][0][0])
            elif ino in pending and not tree.names.get(ino):
                continue
            else:
                fixed = inode.evolve(nlink=len(tree.names.get(ino, ())))
            if fixed != inode:
                t.put_inode(fixed)
    with meta.write() as t:  # totals from the repaired state (the inode counts are committed now)
        tree = _tree(t, None, [])
        want, garbage = _totals(t, tree, sizes, headers)
        if not frames.damaged_chunks:
            for seg, rec in t.garbage_by_segment().items():
                if seg not in sizes:
                    t.adjust_garbage(seg, -rec)
            records = t.garbage_by_segment()
            for seg, real in garbage.items():
                t.adjust_garbage(seg, real - records.get(seg, 0))
            want["garbage_bytes"] = sum(t.garbage_by_segment().values())
        else:
            want["garbage_bytes"] = sum(t.garbage_by_segment().values())
        have = t.counters()
        for counter in set(want) | {k for k in have if k not in HISTORY_COUNTERS}:
            t.set_counter(counter, want.get(counter, 0))
        top = max(set(tree.inodes) | tree.damaged, default=ROOT_INO)
        if t.counter("next_ino") <= top:
            t.set_counter("next_ino", top + 1)


def _recreate_missing(t: Txn, tree: _Tree, chunk_size: int) -> None:
    """Give sound chunk records or a symlink target whose inode is missing (not damaged) a new inode of
    that number: an entry that still names it keeps it, else _attach_lost links it into /lost+found.
    Owned by root alone, mode 0600, since its owner and mode are unknown."""
    owners = {ino for ino, _index, _entry, _inline in t.all_chunks(damaged=[])}
    owners |= {U64.unpack(key)[0] for key in t.sound_keys("symlinks") if len(key) == 8}
    missing = owners - set(tree.inodes) - tree.damaged
    now = time.time_ns()
    for ino in sorted(missing):
        try:
            target = t.get_symlink(ino)
        except CorruptRecord:
            target = None
        if target is not None:
            inode = Inode(ino, stat.S_IFLNK | 0o777, 0, 0, 0, len(target), now, now, now)
        else:
            size = max((index * chunk_size + e.raw_len for index, e in t.chunks_of(ino, damaged=[])), default=0)
            inode = Inode(ino, stat.S_IFREG | 0o600, 0, 0, 0, size, now, now, now)
        inode = inode.evolve(count=t.records_of(inode))
        t.put_inode(inode)
        tree.inodes[ino] = inode


def _attach_lost(t: Txn, tree: _Tree) -> None:
    """Give every inode no path reaches a name in /lost+found (e2fsck's way), until all are reached."""
    pending = {ino for ino, parent, _name in t.orphans() if not parent}
    lost_found: int | None = None
    while True:
        reach = tree.reachable()
        lost = sorted(ino for ino in set(tree.inodes) - reach
                      if not (ino in pending and tree.inodes[ino].nlink == 0 and not tree.names.get(ino)))
        if not lost:
            return
        if lost_found is None:
            lost_found = _lost_found(t, tree)
        # Attach the inode that no other lost inode names first (the top of a lost subtree); in a
        # directory cycle every one is named, so take the lowest.
        named_by_lost = {ino for ino in lost if any(p in lost for p, _n in tree.names.get(ino, ()))}
        ino = next((i for i in lost if i not in named_by_lost), lost[0])
        inode = tree.inodes[ino]
        if stat.S_ISDIR(inode.mode):
            for parent, name in tree.names.get(ino, []):  # its one name is in the cycle
                t.del_dirent(parent, name)
                del tree.dirents[(parent, name)]
            tree.names[ino] = []
        name = f"#{ino}".encode()
        t.put_dirent(lost_found, name, ino, inode.mode)
        tree.dirents[(lost_found, name)] = (ino, stat.S_IFMT(inode.mode))
        tree.names.setdefault(ino, []).append((lost_found, name))


def _lost_found(t: Txn, tree: _Tree) -> int:
    existing = tree.dirents.get((ROOT_INO, LOST_FOUND))
    if existing is not None and stat.S_ISDIR(tree.inodes[existing[0]].mode):
        return existing[0]
    name = LOST_FOUND if existing is None else LOST_FOUND + b"." + str(time.time_ns()).encode()
    ino = max(t.counter("next_ino"), t.highest_ino() + 1)
    t.set_counter("next_ino", ino + 1)
    now = time.time_ns()
    inode = Inode(ino, stat.S_IFDIR | 0o700, 0, 0, 2, 0, now, now, now, 0, ROOT_INO)
    t.put_inode(inode)
    t.put_dirent(ROOT_INO, name, ino, inode.mode)
    tree.inodes[ino] = inode
    tree.dirents[(ROOT_INO, name)] = (ino, stat.S_IFDIR)
    tree.names[ino] = [(ROOT_INO, name)]
    return ino


# -- the command ----------------------------------------------------------------------------------------

def fsck(store: Path, repair: bool = False, progress: Progress | None = None) -> FsckReport:
    """Check the unmounted store (its lock is taken: a mounted store is refused with StoreError).
    Without ``repair`` nothing is written, so a read-only store can be checked."""
    config = read_config(store)
    lock = lock_store(store)
    try:
        if repair:
            secure(store)
            config = upgrade(store, config)
            restore(store, store / "segments")  # after a power loss: back to the last sync point
        elif (record := needs_restore(store / "meta.lmdb")) is not None:
            report = FsckReport(str(store), repair=repair)
            report.problems.append(Problem(
                "needs-restore", str(store / "meta.lmdb"), f"the machine restarted since the last sync point "
                f"(transaction {record.txnid}): what was committed after it may be torn; mounting the volume "
                f"or fsck --repair goes back to it first", True))
            return report
        try:
            meta, identity = open_meta(store, config, readonly=not repair)
        except DamagedMetadata as e:
            report = FsckReport(str(store), repair=repair)
            report.problems.append(Problem("metadata-damaged", str(store / "meta.lmdb"), str(e), False))
            return report
        try:  # with an object store: its segments read through the disk cache, no lock object taken
            segments, _remote = build_segments(store, config, identity, MountOptions(fuse={"ro": True}))
        except BaseException:
            meta.close()
            raise
        meta.on_commit = lambda _txnid, freed: segments.punch(freed)  # fsck's commits are durable
        try:
            damaged: list[DamagedRecord] = []
            table = CodecTable(load_resources(meta, damaged))
            chunks = ChunkStore(segments, table, table.parse(config.hot_codec), config.chunk_size)
            return _run(store, meta, chunks, repair, progress, damaged)
        finally:
            meta.close()
            segments.close()
    finally:
        lock.release()


def _run(store: Path, meta: MetaStore, chunks: ChunkStore, repair: bool, progress: Progress | None,
         damaged: list[DamagedRecord]) -> FsckReport:
    report = FsckReport(str(store), repair=repair)
    segments, chunk_size = chunks.segments, chunks.chunk_size
    sizes = {seg: segments.size_of(seg) for seg in segments.segment_ids()}
    headers = {seg: segments.header_size(seg) for seg in sizes}
    try:
        with meta.read() as t:
            tree = _tree(t, report.problems, damaged)
            frames = _check_frames(t, tree, chunks, sizes, report.problems, damaged, progress)
            _check_segments(segments, sizes, report.problems, report.notes)
            _check_structure(t, tree, sizes, headers, report.problems, report.notes, damaged,
                             frames.damaged_chunks)
            for db in ("symlinks", "xattrs", "temps"):
                damaged += t.damaged_records(db)
            report.problems[:0] = _damage_problems(tree, damaged, chunk_size)
            report.checked = {"inodes": len(tree.inodes), "dirents": t.entry_count("dirents"),
                              "chunks": t.entry_count("chunks"), "frames_verified": frames.verified,
                              "segments": len(sizes)}
    except MetaError as e:
        if isinstance(e, CorruptRecord):
            raise
        report.problems.append(Problem("metadata-unreadable", str(store), f"LMDB's structure is damaged, "
                                       f"the check stopped: {e}", False))
        return report
    if not repair or not (any(p.fixable for p in report.problems) or report.notes):
        return report
    # What is left is what the repair could not fix: check again (frames are not read again: the
    # repair changes no frame) and mark as repaired what no longer shows.
    after: list[Problem] = []
    try:
        _repair(meta, sizes, headers, chunk_size, frames)
        with meta.read() as t:
            again: list[DamagedRecord] = []
            tree = _tree(t, after, again)
            list(t.all_chunks(damaged=again))
            _check_structure(t, tree, sizes, headers, after, [], again, frames.damaged_chunks)
            for db in ("symlinks", "xattrs", "temps", "blobs"):
                again += t.damaged_records(db)
            after[:0] = _damage_problems(tree, again, chunk_size)
    except MetaError as e:
        if isinstance(e, CorruptRecord):
            raise
        report.problems.append(Problem("repair-failed", str(store), f"LMDB's structure is damaged, the "
                                       f"repair stopped ({e}); what it had not committed was rolled back. "
                                       f"Copy the files out (what reads is exact) into a new volume", False))
        return report
    left = {(p.kind, p.path, p.message) for p in after}
    before = {(p.kind, p.path, p.message) for p in report.problems}
    for p in report.problems:
        p.repaired = p.fixable and (p.kind, p.path, p.message) not in left
        if p.kind == "chunk-past-eof":
            p.repaired = p.ino in frames.extend
        if not p.repaired and p.ino is not None and p.ino in tree.inodes:
            p.path = tree.path(p.ino)  # a lost file now has its /lost+found name
    report.problems += [p for p in after if (p.kind, p.path, p.message) not in before]
    return report


def render(report: FsckReport) -> str:
    lines = [f"fsck of {report.store}: " + ", ".join(f"{n} {k}" for k, n in report.checked.items())]
    for p in report.problems:
        state = "REPAIRED" if p.repaired else "DAMAGE  "
        action = ""
        if not p.repaired and not p.fixable:
            action = "  [kept: what depends on it reads as EIO; restore or overwrite it]"
        elif not p.repaired:
            action = "  [run with --repair to fix]" if not report.repair else "  [repair did not fix it]"
        lines.append(f"{state} {p.kind:<22} {p.path}: {p.message}{action}")
    for note in report.notes:
        lines.append(f"note     {note}" + ("  [accounted]" if report.repair else ""))
    counts = ", ".join(f"{k} {n}" for k, n in sorted(report.counts().items()))
    if not report.problems:
        lines.append("clean: no damage found")
    else:
        repaired = sum(p.repaired for p in report.problems)
        lines.append(f"{len(report.problems)} problems ({counts}): {repaired} repaired, "
                     f"{len(report.remaining)} remain")
    return "\n".join(lines)
