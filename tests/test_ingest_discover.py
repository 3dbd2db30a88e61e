"""Discovery (extensions, --glob, --list, symlink cycles) and --part shares."""

from __future__ import annotations

import os
import random

import pytest

from videolabel.errors import VideolabelError
from videolabel.ingest.discover import discover, parse_part, part_of, select_part, video_id_of


def touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_extensions_recursive_sorted(tmp_path) -> None:
    for name in ["a.mp4", "b.MKV", "c.webm", "d.avi", "e.mov", "f.m4v", "g.mpg", "h.mpeg", "i.flv", "j.wmv",
                 "k.ts", "l.3gp", "m.ogv", "deep/er/n.mp4", "skip.txt", "skip.wav", "noext"]:
        touch(tmp_path / name)
    rels = [s.rel for s in discover(tmp_path)]
    assert rels == sorted(rels)
    assert "deep/er/n.mp4" in rels and "b.MKV" in rels
    assert not any(r.startswith("skip") or r == "noext" for r in rels)
    assert len(rels) == 14


def test_symlink_cycles_neither_hang_nor_duplicate(tmp_path) -> None:
    touch(tmp_path / "a" / "x.mp4")
    touch(tmp_path / "b" / "y.mp4")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # cycle to the root
    os.symlink(tmp_path / "a", tmp_path / "b" / "to_a")  # second way into a/
    os.symlink(tmp_path / "b", tmp_path / "b" / "self")  # self cycle
    os.symlink(tmp_path / "nowhere.mp4", tmp_path / "dangling.mp4")
    rels = [s.rel for s in discover(tmp_path)]
    assert rels == ["a/x.mp4", "b/y.mp4", "dangling.mp4"]  # the dangling link is kept (it will fail)


def test_glob_and_list(tmp_path) -> None:
    for name in ["a/x.mp4", "a/y.mkv", "b/z.mp4", "b/w.bin"]:
        touch(tmp_path / name)
    assert [s.rel for s in discover(tmp_path, glob="*.mp4")] == ["a/x.mp4", "b/z.mp4"]
    assert [s.rel for s in discover(tmp_path, glob="b/*")] == ["b/w.bin", "b/z.mp4"]
    assert [s.rel for s in discover(tmp_path, glob="**/*.mkv")] == ["a/y.mkv"]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\nb/z.mp4\n\n{tmp_path / 'a' / 'x.mp4'}\nmissing.mp4\nb/z.mp4\n")
    srcs = discover(tmp_path, list_file=lst)
    assert [s.rel for s in srcs] == ["a/x.mp4", "b/z.mp4", "missing.mp4"]
    assert srcs[0].video_id == video_id_of("a/x.mp4")


def test_missing_src_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(VideolabelError, match="source not found"):
        discover(tmp_path / "nope")
    with pytest.raises(VideolabelError, match="not a directory"):
        discover(touch(tmp_path / "f.mp4"))


def test_video_id_is_stable() -> None:
    # pinned values: an id must never change across versions (a cache's and a run's ids depend on it)
    assert video_id_of("a/x.mp4") == "41eec98879d3760c"
    assert video_id_of("a/b c/vidéo.mp4") == "69c3e8363ea3ba26"  # UTF-8 bytes of the POSIX path
    assert video_id_of("bad\udcff.mp4") == "cc0607d75e1560a2"  # an undecodable file name byte, kept as is
    assert len(video_id_of("x")) == 16 and video_id_of("x") != video_id_of("y")
    import hashlib

    assert video_id_of("a/x.mp4") == hashlib.sha1(b"a/x.mp4").hexdigest()[:16]
    assert video_id_of("a/b c/vidéo.mp4") == hashlib.sha1("a/b c/vidéo.mp4".encode()).hexdigest()[:16]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_parts_are_disjoint_and_cover(n) -> None:
    rnd = random.Random(n)
    ids = [video_id_of(f"dir{rnd.randrange(10)}/v{k}.mp4") for k in range(2000)]
    from videolabel.ingest.discover import Source

    sources = [Source(f"v{k}", f"v{k}", vid) for k, vid in enumerate(ids)]
    shares = [select_part(sources, (i, n)) for i in range(n)]
    seen = [s.rel for share in shares for s in share]
    assert sorted(seen) == sorted(s.rel for s in sources) and len(seen) == len(set(seen))
    assert all(part_of(s.video_id, n) == i for i, share in enumerate(shares) for s in share)
    if n > 1:  # roughly balanced
        assert min(len(s) for s in shares) > 0.7 * len(sources) / n


def test_parse_part() -> None:
    assert parse_part("1/4") == (1, 4) and parse_part((0, 1)) == (0, 1)
    for bad in ["4/4", "x", "1/0", "-1/2"]:
        with pytest.raises(VideolabelError):
            parse_part(bad)
