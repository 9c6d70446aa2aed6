"""A structural check of an LMDB data file, made before LMDB maps it (docs/DESIGN.md, invariant 6).

LMDB trusts its pages: a bit flipped in a node's offset or size makes it read past its page, and past
the end of the file its map faults (SIGBUS, seen in 1 of about 300 random flips of data.mdb); a damaged
free list makes it hand out pages still in use. The record checksums (fs/meta.py) catch damaged
records, not damaged structure. So before LMDB opens a data file that may have changed since it was
last closed cleanly, this walks every tree the way LMDB would (the free and main databases, every
named database, every branch, leaf and overflow page) and checks, with bounds checks of its own, that
every page number, offset and size stays inside its page and the file, that no page is reached twice,
and that no free page is in use. A clean close records the file's size and xxh3-128 beside it
(``verified``), so a clean store is checked by one hash of the file, and the walk runs only after a
crash or when the file changed while closed.

Layouts are LMDB 0.9's on a 64-bit little-endian machine (the only kind the format supports):
page header 16 bytes (pgno u64, pad u16, flags u16, lower u16, upper u16 or overflow page count u32),
node pointers u16 from byte 16; a node is lo u16, hi u16, flags u16, key size u16, key, data.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import xxhash

VERIFIED_FILE = "verified"
PAGE_HEADER = 16
NODE_HEADER = 8
P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = (1 << 64) - 1
MAX_DEPTH = 32  # LMDB's cursor stack
# From byte 16 of a meta page: magic, version, (address), map size, the free DB record (its first u32
# is the page size, its last u64 the root), the main DB record (root last), last used page, txn id.
META = struct.Struct("<II8xQI36xQ40xQQQ")
LMDB_MAGIC = 0xBEEFC0DE


class Walk:
    """One walk over a data file held in memory (so a bad offset is an IndexError here, never a fault)."""

    def __init__(self, data: bytes, psize: int, last_pg: int) -> None:
        self.data = data
        self.psize = psize
        self.last_pg = last_pg
        self.seen: set[int] = set()
        self.free: list[int] = []  # page numbers the free list holds
        self.problems: list[str] = []

    def page(self, pgno: int, what: str) -> int | None:
        """The offset of page ``pgno``, checked (None and a problem if it is not a usable page)."""
        if pgno > self.last_pg or (pgno + 1) * self.psize > len(self.data):
            self.problems.append(f"{what}: page {pgno} is past the last page {self.last_pg}")
            return None
        if pgno in self.seen:
            self.problems.append(f"{what}: page {pgno} is reached twice")
            return None
        self.seen.add(pgno)
        off = pgno * self.psize
        if struct.unpack_from("<Q", self.data, off)[0] != pgno:
            self.problems.append(f"{what}: page {pgno} names itself page {struct.unpack_from('<Q', self.data, off)[0]}")
            return None
        return off

    def tree(self, root: int, what: str, named: bool, depth: int = 0) -> None:
        """Check the tree under page ``root``; ``named``: its leaves hold named databases (main DB)."""
        if root == P_INVALID:
            return
        if depth >= MAX_DEPTH:
            self.problems.append(f"{what}: deeper than {MAX_DEPTH} levels")
            return
        off = self.page(root, what)
        if off is None:
            return
        flags, lower, upper = struct.unpack_from("<HHH", self.data, off + 10)
        kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META)
        if kind not in (P_BRANCH, P_LEAF) or flags & ~(P_BRANCH | P_LEAF | 0x10 | 0x4000 | 0x8000):
            self.problems.append(f"{what}: page {root} has flags {flags:#x}, not a branch or leaf page")
            return
        if not (PAGE_HEADER <= lower <= upper <= self.psize) or (lower - PAGE_HEADER) % 2:
            self.problems.append(f"{what}: page {root} has bounds {lower}..{upper}")
            return
        extents: list[tuple[int, int]] = []
        children: list[int] = []
        for i in range((lower - PAGE_HEADER) // 2):
            ptr = struct.unpack_from("<H", self.data, off + PAGE_HEADER + 2 * i)[0]
            if not upper <= ptr <= self.psize - NODE_HEADER:
                self.problems.append(f"{what}: page {root} node {i} at {ptr} is outside {upper}..{self.psize}")
                return
            lo, hi, nflags, ksize = struct.unpack_from("<HHHH", self.data, off + ptr)
            size = NODE_HEADER + ksize
            if kind == P_LEAF:
                size += 8 if nflags & F_BIGDATA else lo | hi << 16
            extents.append((ptr, size + (size & 1)))
        # LMDB packs a page's nodes back to back from ``upper`` to its end (an insert takes the space
        # below ``upper``, a delete closes its gap): a damaged size or offset breaks the tiling, and
        # LMDB would then shift the wrong bytes at the next change of the page.
        end = upper
        for ptr, size in sorted(extents):
            if ptr != end:
                self.problems.append(f"{what}: page {root}: a node at {ptr} where the one before ends at {end}")
                return
            end += size
        if end != self.psize:
            self.problems.append(f"{what}: page {root}: its nodes end at {end}, not at the page's end")
            return
        for i in range(len(extents)):
            ptr = struct.unpack_from("<H", self.data, off + PAGE_HEADER + 2 * i)[0]
            lo, hi, nflags, ksize = struct.unpack_from("<HHHH", self.data, off + ptr)
            if kind == P_BRANCH:
                children.append(lo | hi << 16 | nflags << 32)
            else:
                self.leaf(root, i, off + ptr, ptr, lo | hi << 16, nflags, ksize, what, named)
        for child in children:
            self.tree(child, what, named, depth + 1)

    def leaf(self, pgno: int, i: int, node: int, ptr: int, size: int, nflags: int, ksize: int, what: str,
             named: bool) -> None:
        start = node + NODE_HEADER + ksize
        if nflags & ~(F_BIGDATA | F_SUBDATA) or (nflags & F_SUBDATA and not named):
            self.problems.append(f"{what}: page {pgno} node {i} has flags {nflags:#x}")
            return
        if nflags & F_BIGDATA:
            if ptr + NODE_HEADER + ksize + 8 > self.psize:
                self.problems.append(f"{what}: page {pgno} node {i}: its overflow page number is past the page")
                return
            first = struct.unpack_from("<Q", self.data, start)[0]
            off = self.page(first, what)
            if off is None:
                return
            flags = struct.unpack_from("<H", self.data, off + 10)[0]
            pages = struct.unpack_from("<I", self.data, off + 12)[0]
            if not flags & P_OVERFLOW or pages < 1 or first + pages - 1 > self.last_pg \
                    or size > pages * self.psize - PAGE_HEADER:
                self.problems.append(f"{what}: overflow page {first} ({pages} pages, flags {flags:#x}) cannot "
                                     f"hold {size} bytes")
                return
            self.seen.update(range(first + 1, first + pages))
            if what == "free list":
                self.free_ids(self.data[off + PAGE_HEADER:off + PAGE_HEADER + size], pgno, i)
            return
        if ptr + NODE_HEADER + ksize + size > self.psize:
            self.problems.append(f"{what}: page {pgno} node {i} has {size} bytes of data past the page")
            return
        if nflags & F_SUBDATA:
            if size != 48:
                self.problems.append(f"{what}: page {pgno} node {i}: a database record of {size} bytes")
                return
            name = self.data[node + NODE_HEADER:start].decode(errors="replace")
            self.tree(struct.unpack_from("<Q", self.data, start + 40)[0], f"database {name!r}", False)
        elif what == "free list":
            self.free_ids(self.data[start:start + size], pgno, i)

    def free_ids(self, ids: bytes, pgno: int, i: int) -> None:
        """A free-list record: a count, then that many page numbers (LMDB trusts the count)."""
        if len(ids) < 8 or (struct.unpack_from("<Q", ids)[0] + 1) * 8 > len(ids):
            self.problems.append(f"free list: page {pgno} node {i}: its count exceeds its {len(ids)} bytes")
            return
        count = struct.unpack_from("<Q", ids)[0]
        self.free.extend(struct.unpack_from(f"<{count}Q", ids, 8))


def _meta(data: bytes, off: int) -> tuple[int, int, int, int, int] | None:
    """(txnid, page size, free root, main root, last page) of a valid meta page at ``off``."""
    if len(data) < off + PAGE_HEADER + META.size:
        return None
    magic, version, _mapsize, psize, free_root, main_root, last_pg, txnid = META.unpack_from(data, off + PAGE_HEADER)
    if magic != LMDB_MAGIC or version != 1 or psize not in (4096, 8192, 16384, 32768, 65536):
        return None
    return txnid, psize, free_root, main_root, last_pg


def newest_txnid(data: bytes) -> int | None:
    """The transaction id LMDB would open the file at (the newer valid meta page's)."""
    first = _meta(data, 0)
    second = _meta(data, first[1] if first else 4096)
    metas = [m for m in (first, second) if m is not None]
    return max(metas)[0] if metas else None


def check_structure(data: bytes, closed_at: int | None = None) -> list[str]:
    """The structural problems of an LMDB data file's contents (empty if LMDB can read it safely).
    ``closed_at``: the transaction id it had when last closed cleanly, if known."""
    first = _meta(data, 0)
    second = _meta(data, first[1] if first else 4096)
    metas = [m for m in (first, second) if m is not None]
    if not metas:
        return ["no valid meta page"]
    problems = []
    # LMDB writes transaction t's meta into page t % 2, so the two differ by one and each page's
    # parity is its own; a flipped id would make LMDB open an older snapshot, or a damaged one. A
    # restore after a power loss (fs/durability.py) writes one saved meta page into both: the two
    # are then the same page but for the page number in their headers.
    if first and second and first[0] == second[0]:
        psize = first[1]
        if data[8:psize] != data[psize + 8:2 * psize]:
            problems.append(f"its meta pages disagree (two different pages of transaction {first[0]})")
    elif first and second and (first[0] % 2 != 0 or second[0] % 2 != 1 or abs(first[0] - second[0]) != 1) \
            and first[0] + second[0] > 1:
        problems.append(f"its meta pages disagree (transactions {first[0]} and {second[0]})")
    txnid, psize, free_root, main_root, last_pg = max(metas)
    if closed_at is not None and txnid != closed_at:
        problems.append(f"it opens at transaction {txnid}, but was closed at {closed_at}")
    if problems:
        return problems
    if (last_pg + 1) * psize > len(data):
        return [f"truncated: {len(data)} bytes, the meta page says {(last_pg + 1) * psize}"]
    walk = Walk(data, psize, last_pg)
    walk.seen.update((0, 1))
    walk.tree(main_root, "main database", True)
    walk.tree(free_root, "free list", False)
    for pgno in walk.free:
        if pgno > last_pg or pgno in walk.seen:
            walk.problems.append(f"free list: page {pgno} is {'past the end' if pgno > last_pg else 'in use'}")
    return walk.problems


def fingerprint(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    return {"size": len(data), "xxh3_128": xxhash.xxh3_128_hexdigest(data), "txnid": newest_txnid(data)}


def record_clean(env_dir: Path) -> None:
    """After a clean close: remember the data file's fingerprint, so the next open needs no walk."""
    tmp = env_dir / (VERIFIED_FILE + ".tmp")
    tmp.write_text(json.dumps(fingerprint(env_dir / "data.mdb")))
    os.replace(tmp, env_dir / VERIFIED_FILE)


def forget_clean(env_dir: Path) -> None:
    """The data file is about to change: its fingerprint no longer holds."""
    (env_dir / VERIFIED_FILE).unlink(missing_ok=True)


def verify(env_dir: Path) -> list[str]:
    """Problems that make the data file unsafe to map: none if it is as a clean close left it (one
    hash), else the walk's findings."""
    data = (env_dir / "data.mdb").read_bytes()
    closed_at = None
    try:
        recorded = json.loads((env_dir / VERIFIED_FILE).read_text())
        if recorded == {"size": len(data), "xxh3_128": xxhash.xxh3_128_hexdigest(data),
                        "txnid": newest_txnid(data)}:
            return []
        closed_at = int(recorded["txnid"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # never closed cleanly (a crash), or the record itself is damaged: the walk decides
    return check_structure(data, closed_at)


def newest_meta_page(path: Path) -> tuple[int, bytes]:
    """(transaction id, bytes) of the meta page LMDB would open ``path`` at."""
    with open(path, "rb") as fh:
        head = fh.read(2 * 65536)
    first = _meta(head, 0)
    if first is None:
        raise ValueError(f"{path}: no valid first meta page")
    psize = first[1]
    second = _meta(head, psize)
    slot = 1 if second is not None and second[0] > first[0] else 0
    txnid = (second if slot else first)[0]  # type: ignore[index]
    return txnid, head[slot * psize:(slot + 1) * psize]


def put_meta_page(path: Path, page: bytes) -> None:
    """Make ``page`` (a meta page saved at a sync point) both of the data file's meta pages, and sync:
    LMDB then opens the file at that state."""
    psize = len(page)
    fd = os.open(path, os.O_RDWR)
    try:
        for slot in (0, 1):
            own = bytearray(page)
            struct.pack_into("<Q", own, 0, slot)  # a page names itself in its header
            os.pwrite(fd, bytes(own), slot * psize)
        os.fdatasync(fd)
    finally:
        os.close(fd)
