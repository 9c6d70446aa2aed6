"""The rules of daemon/kernelnames.py: which cached names an operation invalidates (the kernel is
played by a list of invalidated paths)."""

from __future__ import annotations

from thermofs.daemon.kernelnames import KernelNames


def names() -> tuple[KernelNames, list[str]]:
    dropped: list[str] = []
    return KernelNames(dropped.append), dropped


def test_files_with_one_link_and_directories_are_not_tracked() -> None:
    k, dropped = names()
    k.looked_up("/a", 5, 1, False)
    k.looked_up("/d", 6, 3, True)
    assert not k.active
    k.changed(5, "/a")
    k.unlinked("/a")
    k.renamed("/d", "/e")
    assert dropped == []


def test_a_change_invalidates_every_other_name() -> None:
    k, dropped = names()
    for path in ("/a", "/d/b", "/c"):
        k.looked_up(path, 7, 3, False)
    k.changed(7, "/d/b")
    assert sorted(dropped) == ["/a", "/c"]
    dropped.clear()
    k.changed(7, None)  # through a name libfuse could not build: all of them
    assert sorted(dropped) == ["/a", "/c", "/d/b"]


def test_link_tracks_both_names_and_invalidates_all_but_the_new_one() -> None:
    k, dropped = names()
    k.looked_up("/a", 9, 1, False)  # one link: not tracked yet
    k.linked(9, "/a", "/b")
    assert dropped == ["/a"]  # its link count and ctime changed
    dropped.clear()
    k.changed(9, "/b")
    assert dropped == ["/a"]


def test_unlink_invalidates_the_remaining_names() -> None:
    k, dropped = names()
    for path in ("/a", "/b", "/c"):
        k.looked_up(path, 3, 3, False)
    k.unlinked("/c")
    assert sorted(dropped) == ["/a", "/b"]
    dropped.clear()
    k.changed(3, "/a")
    assert dropped == ["/b"]  # /c is gone


def test_rename_rekeys_names_and_directories_move_their_descendants() -> None:
    k, dropped = names()
    k.looked_up("/d/x/a", 4, 2, False)
    k.looked_up("/b", 4, 2, False)
    k.renamed("/d", "/e")  # a directory: /d/x/a is now /e/x/a
    assert dropped == []
    k.changed(4, "/b")
    assert dropped == ["/e/x/a"]
    dropped.clear()
    k.renamed("/b", "/c")  # the file itself: its ctime changed for the other name
    assert dropped == ["/e/x/a"]
    dropped.clear()
    k.changed(4, "/e/x/a")
    assert dropped == ["/c"]


def test_rename_over_a_link_drops_a_link_of_the_replaced_file() -> None:
    k, dropped = names()
    k.looked_up("/a", 2, 2, False)
    k.looked_up("/b", 2, 2, False)
    k.renamed("/x", "/b")  # another file replaces /b: /a has one link less
    assert dropped == ["/a"]


def test_rename_between_two_names_of_one_file_changes_nothing() -> None:
    k, dropped = names()
    k.looked_up("/a", 2, 2, False)
    k.looked_up("/b", 2, 2, False)
    k.renamed("/a", "/b")  # POSIX: nothing happens, both names stay
    assert dropped == []
    k.changed(2, "/a")
    assert dropped == ["/b"]


def test_a_name_reused_by_another_file_moves_to_it() -> None:
    k, dropped = names()
    k.looked_up("/a", 2, 2, False)
    k.looked_up("/b", 2, 2, False)
    k.looked_up("/a", 8, 2, False)  # /a now names inode 8
    k.changed(2, "/b")
    assert dropped == []
