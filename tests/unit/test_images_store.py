"""The image store: imports from each format, names, all-or-nothing imports, remove and gc."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.runtime.native.images import Image, ImageError, ImageStore, image_main
from agent.runtime.native.oci import ERR_IMAGE_NEVER_PULL, INVALID_IMAGE_NAME
from agent.runtime.native.rootfs import remove_tree
from common.version import host_arch
from tests.imagebuild import (
    Entry,
    LayerSpec,
    check_root_marker,
    corrupt,
    directory,
    file,
    hardlink,
    layer_tar,
    layout_blob,
    layout_layer_digests,
    layout_top_digest,
    sha256,
    symlink,
    write_docker_save,
    write_oci_archive,
    write_oci_layout,
)

BASE: list[list[Entry]] = [[directory("etc"), file("etc/os-release", "ID=test\n"), file("bin/x")]]
APP: list[list[Entry]] = [*BASE, [directory("app"), file("app/main", "run", mode=0o755)]]
OTHER_ARCH = "s390x" if host_arch() != "s390x" else "amd64"


@pytest.fixture(autouse=True)
def _root_marker(request: pytest.FixtureRequest) -> None:
    """Tests marked root skip without root (and fail under CI=true)."""
    check_root_marker(request)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    """An empty store under the test's temp dir."""
    return ImageStore(tmp_path / "store")


def contents(store: ImageStore) -> tuple[set[str], set[str], dict[str, str]]:
    """(blob hexes, layer dir names, names) as on disk."""
    blobs = {p.name for p in store.blobs.iterdir()} if store.blobs.exists() else set()
    layers = {p.name for p in store.layers.iterdir()} if store.layers.exists() else set()
    names = json.loads(store.state_path.read_text())["names"] if store.state_path.exists() else {}
    return blobs, layers, names


def assert_empty(store: ImageStore) -> None:
    """Nothing cached: no blob, no layer dir, no name, no staging litter."""
    assert contents(store) == (set(), set(), {})
    assert not store.tmp.exists() or list(store.tmp.iterdir()) == []


def test_import_oci_layout(store: ImageStore, tmp_path: Path) -> None:
    """An OCI layout imports with its name, config, layers in order, and a manifest digest."""
    layout = write_oci_layout(
        None,
        tmp_path / "oci",
        ref="app:v1",
        extra_layers=APP,
        entrypoint=["/app/main"],
        cmd=["--x"],
        env=["A=1"],
        working_dir="/app",
        user="1000",
    )
    [image] = store.import_path(layout)
    assert image.ref == "docker.io/library/app:v1"
    assert image.digest == layout_top_digest(layout)
    assert image.diff_ids == tuple(sha256(layer_tar(x)) for x in APP)
    assert image.config.entrypoint == ["/app/main"]
    assert image.config.cmd == ["--x"]
    assert (image.config.env, image.config.working_dir, image.config.user) == (
        ["A=1"],
        "/app",
        "1000",
    )
    assert image.size == len("ID=test\n") + len("run")
    top, bottom = store.layer_dirs(image)
    assert (top / "app/main").read_text() == "run"
    assert (bottom / "etc/os-release").read_text() == "ID=test\n"
    assert top.parent.name == image.diff_ids[1].split(":")[1]


def test_import_docker_save(store: ImageStore, tmp_path: Path) -> None:
    """A docker save tarball imports; all its RepoTags name the same image."""
    tarball = write_docker_save(
        None,
        tmp_path / "img.tar",
        repo_tags=["app:v1", "app:latest"],
        extra_layers=APP,
        cmd=["serve"],
    )
    [image] = store.import_path(tarball)
    assert image.ref == "docker.io/library/app:latest"  # first name, sorted
    assert image.config.cmd == ["serve"]
    same = store.get("app:v1")
    assert same is not None and same.digest == image.digest
    assert (store.layer_dirs(image)[0] / "app/main").read_text() == "run"


def test_import_oci_archive(store: ImageStore, tmp_path: Path) -> None:
    """An OCI layout inside a tar file imports like the directory."""
    archive = write_oci_archive(None, tmp_path / "img.tar", ref="app:v2", extra_layers=APP)
    [image] = store.import_path(archive)
    assert image.ref == "docker.io/library/app:v2"


def test_same_layers_shared(store: ImageStore, tmp_path: Path) -> None:
    """Two images with a common base layer unpack it once."""
    store.import_path(write_oci_layout(None, tmp_path / "a", ref="a", extra_layers=BASE))
    store.import_path(
        write_docker_save(None, tmp_path / "b.tar", repo_tags=["b"], extra_layers=APP)
    )
    a, b = store.require("a"), store.require("b")
    assert store.layer_dirs(a)[0] == store.layer_dirs(b)[1]
    assert len(contents(store)[1]) == 2


@pytest.mark.parametrize(
    "spelling",
    [
        "app",
        "app:latest",
        "library/app",
        "docker.io/library/app",
        "docker.io/library/app:latest",
        "index.docker.io/library/app:latest",
    ],
)
def test_get_by_spelling(store: ImageStore, tmp_path: Path, spelling: str) -> None:
    """Any Docker spelling of the name finds the image."""
    store.import_path(write_oci_layout(None, tmp_path / "oci", ref="app", extra_layers=BASE))
    image = store.get(spelling)
    assert image is not None and image.ref == "docker.io/library/app:latest"


def test_get_by_digest(store: ImageStore, tmp_path: Path) -> None:
    """`name@sha256:...` and a bare digest resolve; other names and tags do not."""
    [image] = store.import_path(
        write_oci_layout(None, tmp_path / "o", ref="app:1", extra_layers=BASE)
    )
    pinned = store.get(f"app@{image.digest}")
    assert pinned is not None and pinned.digest == image.digest
    assert pinned.ref == f"docker.io/library/app@{image.digest}"
    assert store.get(image.digest) is not None
    assert store.get(f"other@{image.digest}") is None
    assert store.get("app:2") is None
    assert store.get("app") is None  # :latest was never imported
    assert store.get("sha256:" + "0" * 64) is None


def test_get_invalid_name(store: ImageStore) -> None:
    """An unparseable reference is InvalidImageName, not 'not found'."""
    with pytest.raises(ImageError) as err:
        store.get("Not/Valid")
    assert err.value.reason == INVALID_IMAGE_NAME


def test_require_missing_is_never_pull(store: ImageStore) -> None:
    """An image not in the store fails with ErrImageNeverPull."""
    with pytest.raises(ImageError) as err:
        store.require("busybox")
    assert err.value.reason == ERR_IMAGE_NEVER_PULL
    assert "busybox" in str(err.value)


def test_multi_arch_index_picks_this_arch(store: ImageStore, tmp_path: Path) -> None:
    """From an index, the linux/<this arch> manifest is imported; the index digest resolves."""
    layout = write_oci_layout(
        None,
        tmp_path / "oci",
        ref="multi:1",
        extra_layers=BASE,
        platforms=[OTHER_ARCH, host_arch()],
    )
    [image] = store.import_path(layout)
    index_digest = layout_top_digest(layout)
    assert image.digest != index_digest
    by_index = store.get(f"multi@{index_digest}")
    assert by_index is not None and by_index.digest == image.digest
    assert store.get(index_digest) is not None


def test_repo_digest_names_the_repository_and_the_manifest(
    store: ImageStore, tmp_path: Path
) -> None:
    """A container status's imageID (containerd's form): `<repository>@<manifest digest>`
    whatever the spelling, tag or index digest it was asked by; the bare manifest digest
    for an image known by digest alone."""
    layout = write_oci_layout(
        None, tmp_path / "oci", ref="multi:1", extra_layers=BASE, platforms=[host_arch()]
    )
    [image] = store.import_path(layout)
    expected = f"docker.io/library/multi@{image.digest}"
    index = layout_top_digest(layout)
    assert index != image.digest
    for spelling in ("multi:1", "docker.io/library/multi:1", f"multi@{index}"):
        found = store.get(spelling)
        assert found is not None and found.repo_digest == expected, spelling
    for digest in (image.digest, index):
        found = store.get(digest)
        assert found is not None and found.repo_digest == image.digest, digest
    hosted = write_oci_layout(
        None, tmp_path / "o2", ref="registry.local:5000/team/app:7", extra_layers=APP
    )
    [other] = store.import_path(hosted)
    assert other.repo_digest == f"registry.local:5000/team/app@{other.digest}"


def test_wrong_arch_refused(store: ImageStore, tmp_path: Path) -> None:
    """An image only for another architecture is refused, naming both, and nothing stays."""
    only_other = write_oci_layout(None, tmp_path / "o1", extra_layers=BASE, platforms=[OTHER_ARCH])
    with pytest.raises(ImageError, match=f"no image for linux/{host_arch()}.*{OTHER_ARCH}"):
        store.import_path(only_other)
    assert_empty(store)
    single = write_oci_layout(None, tmp_path / "o2", extra_layers=BASE, arch=OTHER_ARCH)
    with pytest.raises(ImageError, match=f"is for linux/{OTHER_ARCH}, this node is linux/"):
        store.import_path(single)
    assert_empty(store)


def test_uncompressed_layers(store: ImageStore, tmp_path: Path) -> None:
    """Plain tar layers (no compression) import too."""
    layout = write_oci_layout(None, tmp_path / "o", extra_layers=APP, compression="none")
    [image] = store.import_path(layout)
    assert (store.layer_dirs(image)[0] / "app/main").exists()


def test_untagged_then_named(store: ImageStore, tmp_path: Path) -> None:
    """A layout with only a bare tag is imported by digest; `name=` names it."""
    layout = write_oci_layout(
        None, tmp_path / "o", ref="latest", annotation="oci", extra_layers=BASE
    )
    [image] = store.import_path(layout)
    assert image.ref == image.digest
    assert [i.ref for i in store.list()] == [image.digest]
    [named] = store.import_path(layout, name="registry.local/team/base:7")
    assert named.ref == "registry.local/team/base:7"
    assert [i.ref for i in store.list()] == ["registry.local/team/base:7"]
    full = write_oci_layout(
        None, tmp_path / "o2", ref="user/thing:3", annotation="oci", extra_layers=BASE
    )
    assert store.import_path(full)[0].ref == "docker.io/user/thing:3"


def test_corrupted_blob_refused_nothing_cached(store: ImageStore, tmp_path: Path) -> None:
    """A blob whose content does not match its digest is refused; nothing is kept."""
    layout = write_oci_layout(None, tmp_path / "o", ref="bad", extra_layers=APP)
    corrupt(layout_blob(layout, layout_layer_digests(layout)[1]))
    with pytest.raises(ImageError, match="digest mismatch"):
        store.import_path(layout)
    assert_empty(store)
    assert store.get("bad") is None


def test_corrupted_docker_save_layer_refused(store: ImageStore, tmp_path: Path) -> None:
    """In a docker save, a layer tar that does not match its diff_id is refused."""
    data = layer_tar(APP[1])
    tarball = write_docker_save(None, tmp_path / "d.tar", repo_tags=["bad"], extra_layers=APP)
    raw = tarball.read_bytes()
    at = raw.index(data) + data.index(b"run")
    tarball.write_bytes(raw[:at] + b"RUN" + raw[at + 3 :])
    with pytest.raises(ImageError, match="config says"):
        store.import_path(tarball)
    assert_empty(store)


def test_failed_import_keeps_existing_images(store: ImageStore, tmp_path: Path) -> None:
    """Rolling back a failed import removes only what it added."""
    store.import_path(write_oci_layout(None, tmp_path / "a", ref="base", extra_layers=BASE))
    before = contents(store)
    layout = write_oci_layout(None, tmp_path / "b", ref="app", extra_layers=APP)
    corrupt(layout_blob(layout, layout_layer_digests(layout)[1]))
    with pytest.raises(ImageError):
        store.import_path(layout)
    assert contents(store) == before
    assert store.layer_dirs(store.require("base"))[0].is_dir()


def test_size_mismatch_refused(store: ImageStore, tmp_path: Path) -> None:
    """A blob longer than its descriptor says is refused."""
    layout = write_oci_layout(None, tmp_path / "o", extra_layers=BASE)
    path = layout_blob(layout, layout_layer_digests(layout)[0])
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ImageError, match="larger than"):
        store.import_path(layout)
    assert_empty(store)


def _escapes(outside: Path) -> dict[str, LayerSpec]:
    return {
        "traversal": [file("ok"), file("../../evil", "x")],
        "absolute": [file(str(outside / "abs-evil"), "x")],
        "symlink": [symlink("link", str(outside)), file("link/passwd", "x")],
        "relative-symlink": [symlink("up", "../../../../..")],
        "hardlink": [hardlink("stolen", str(outside / "secret"))],
        "hardlink-dotdot": [hardlink("stolen", "../../../../secret")],
    }


@pytest.mark.parametrize("kind", list(_escapes(Path("/x"))))
@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_escaping_layers_refused(store: ImageStore, tmp_path: Path, kind: str, fmt: str) -> None:
    """Layers that reach outside their directory are refused; nothing outside, nothing cached."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    layers = [BASE[0], _escapes(outside)[kind]]
    if fmt == "oci":
        src = write_oci_layout(None, tmp_path / "o", ref="evil", extra_layers=layers)
    else:
        src = write_docker_save(None, tmp_path / "d.tar", repo_tags=["evil"], extra_layers=layers)
    with pytest.raises(ImageError, match="refusing entry"):
        store.import_path(src)
    assert_empty(store)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert not any(p.name in ("evil", "abs-evil", "passwd") for p in tmp_path.rglob("*"))


def test_too_deep_layer_refused_store_still_works(store: ImageStore, tmp_path: Path) -> None:
    """A directory chain deeper than MAX_DEPTH is refused while unpacking, and the store
    works on. (Removal no longer depends on it: see test_deep_tree_in_tmp_swept_*.)"""
    deep = [[directory("/".join(["d"] * 1500))]]
    layout = write_oci_layout(None, tmp_path / "o", ref="deep", extra_layers=deep)
    with pytest.raises(ImageError, match="components deep"):
        store.import_path(layout)
    assert_empty(store)
    store.import_path(write_oci_layout(None, tmp_path / "b", ref="base", extra_layers=BASE))
    assert store.get("base") is not None


def test_not_an_image(store: ImageStore, tmp_path: Path) -> None:
    """Paths that are not images are refused with a clear message."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="not an OCI layout"):
        store.import_path(tmp_path / "empty")
    (tmp_path / "junk").write_bytes(b"junk" * 100)
    with pytest.raises(ImageError, match="not a directory or a tar archive"):
        store.import_path(tmp_path / "junk")
    with pytest.raises(ImageError, match="no such file"):
        store.import_path(tmp_path / "missing")


def test_docker_save_member_paths_confined(store: ImageStore, tmp_path: Path) -> None:
    """manifest.json cannot make the importer read files outside the source."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps([{"Config": "../../etc/passwd", "Layers": []}]))
    with pytest.raises(ImageError, match="refusing path"):
        store.import_path(src)


def test_list_and_tag_move(store: ImageStore, tmp_path: Path) -> None:
    """list() has one entry per tag; a re-pointed tag leaves the old image as repo@digest."""
    [old] = store.import_path(write_oci_layout(None, tmp_path / "a", ref="app", extra_layers=BASE))
    store.import_path(
        write_oci_layout(None, tmp_path / "b", ref="app:2", extra_layers=BASE, cmd=["other"])
    )
    [new] = store.import_path(write_oci_layout(None, tmp_path / "c", ref="app", extra_layers=APP))
    refs = sorted(i.ref for i in store.list())
    assert refs == [
        "docker.io/library/app:2",
        "docker.io/library/app:latest",
        f"docker.io/library/app@{old.digest}",
    ]
    latest = store.get("app")
    assert latest is not None and latest.digest == new.digest


def test_remove_and_gc(store: ImageStore, tmp_path: Path) -> None:
    """remove drops names; gc deletes what no image and no running pod uses."""
    [a] = store.import_path(write_oci_layout(None, tmp_path / "a", ref="a", extra_layers=BASE))
    [b] = store.import_path(write_oci_layout(None, tmp_path / "b", ref="b", extra_layers=APP))
    assert store.gc().blobs_removed == 0
    store.remove("b")
    assert store.get("b") is None and store.get(f"b@{b.digest}") is None
    b_top = store.layer_dirs(b)[0]
    stats = store.gc(in_use={str(b_top)})  # a pod still runs on b's top layer
    assert stats.blobs_removed == 3  # b's manifest, config and top layer blob
    assert stats.layers_removed == 0 and b_top.is_dir()
    assert stats.bytes_freed > 0
    assert store.layer_dirs(store.require("a"))[0].is_dir()
    stats = store.gc()
    assert (stats.blobs_removed, stats.layers_removed) == (0, 1)
    assert not b_top.parent.exists()
    store.remove("docker.io/library/a:latest")
    store.gc(in_use={a.diff_ids[0]})
    assert contents(store)[1] == {a.diff_ids[0].split(":")[1]}
    store.gc()
    assert_empty(store)


def test_remove_by_digest_and_pinned(store: ImageStore, tmp_path: Path) -> None:
    """A bare digest removes every name; a pinned name only itself."""
    tarball = write_docker_save(
        None, tmp_path / "d.tar", repo_tags=["x:1", "y:1"], extra_layers=BASE
    )
    [img] = store.import_path(tarball)
    store.remove(f"x@{img.digest}")
    assert store.get("x:1") is not None and store.get(f"x@{img.digest}") is None
    store.remove(img.digest)
    assert store.list() == []


def test_remove_unknown(store: ImageStore) -> None:
    """Removing a name that is not there says so, with ErrImageNeverPull."""
    with pytest.raises(ImageError, match="no such image: nothing:here") as err:
        store.remove("nothing:here")
    assert err.value.reason == ERR_IMAGE_NEVER_PULL


def test_missing_layer_dir_unpacked_again(store: ImageStore, tmp_path: Path) -> None:
    """A layer dir deleted by hand is rebuilt from its blob on the next layer_dirs."""
    [image] = store.import_path(write_oci_layout(None, tmp_path / "a", extra_layers=APP))
    top = store.layer_dirs(image)[0]
    shutil.rmtree(top.parent)
    assert (store.layer_dirs(image)[0] / "app/main").read_text() == "run"


def test_duplicate_layer_listed_once(store: ImageStore, tmp_path: Path) -> None:
    """The same layer twice in an image appears once in layer_dirs, at the top position."""
    layers: list[LayerSpec] = [BASE[0], APP[1], BASE[0]]
    [image] = store.import_path(write_oci_layout(None, tmp_path / "a", extra_layers=layers))
    dirs = store.layer_dirs(image)
    assert len(dirs) == 2 and (dirs[0] / "etc/os-release").exists()


def test_crash_litter_cleared(store: ImageStore, tmp_path: Path) -> None:
    """Staging left by a crashed writer is removed by the next import; it is never an image."""
    store.tmp.mkdir(parents=True)
    (store.tmp / "layer-crashed" / "rootfs").mkdir(parents=True)
    (store.tmp / "blob-crashed").write_bytes(b"half")
    store.import_path(write_oci_layout(None, tmp_path / "a", extra_layers=BASE))
    assert list(store.tmp.iterdir()) == []


def test_reads_need_no_store(tmp_path: Path) -> None:
    """A store that was never written lists nothing and finds nothing (no directories made)."""
    store = ImageStore(tmp_path / "never")
    assert store.list() == [] and store.get("busybox") is None
    assert not (tmp_path / "never").exists()


def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """image_main: import, ls with aligned columns, rm, and errors with exit code 1."""
    root = str(tmp_path / "store")
    layout = write_oci_layout(None, tmp_path / "o", ref="ghcr.io/org/app:v1", extra_layers=APP)
    assert image_main(["--root", root, "import", str(layout)]) == 0
    assert "imported ghcr.io/org/app:v1 sha256:" in capsys.readouterr().out
    tarball = write_docker_save(None, tmp_path / "d.tar", repo_tags=["busybox"], extra_layers=BASE)
    assert image_main(["import", str(tarball), "--root", root]) == 0
    capsys.readouterr()
    assert image_main(["ls", "--root", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["busybox", "latest"],
        ["ghcr.io/org/app", "v1"],
    ]
    assert lines[1].index("latest") == lines[0].index("TAG")  # aligned
    assert len(lines[1].split()[2]) == 12 and lines[1].split()[3].endswith("B")
    assert image_main(["rm", "busybox", "--root", root]) == 0
    assert image_main(["rm", "--root", root, "busybox"]) == 1
    assert "no such image: busybox" in capsys.readouterr().err
    assert image_main(["--root", root, "import", str(tmp_path / "nope")]) == 1
    assert image_main(["frobnicate"]) == 2
    assert isinstance(ImageStore(root).list()[0], Image)


def test_concurrent_writers(store: ImageStore, tmp_path: Path) -> None:
    """Imports and gc from several threads (as asyncio.to_thread runs them) serialise safely."""
    sources = [
        write_oci_layout(
            None, tmp_path / f"o{i}", ref=f"img{i}", extra_layers=[*BASE, [file(f"n{i}")]]
        )
        for i in range(4)
    ]
    errors: list[BaseException] = []

    def work(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as err:  # collected and re-raised in the test thread
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=(lambda s=s: store.import_path(s),)) for s in sources
    ]
    threads.append(threading.Thread(target=work, args=(store.gc,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(i.ref for i in store.list()) == [
        f"docker.io/library/img{i}:latest" for i in range(4)
    ]
    assert len(contents(store)[1]) == 5  # the shared base layer once, one layer each


# --- untrusted input: trees of any depth, files that are not files, layers that explode -------

DEEP = 1500  # past Python's recursion limit (shutil.rmtree raised RecursionError on 3.11/3.12)


def _deep_dir(top: Path, depth: int = DEEP) -> None:
    """`mkdir d; cd d`, `depth` times below `top` (made by descriptor: the path is too long)."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def deep_store(store: ImageStore) -> Iterator[ImageStore]:
    """The store, removed without recursion afterwards: pytest cleans its tmp dirs with
    shutil.rmtree, so a deep tree left behind would fail a later session."""
    try:
        yield store
    finally:
        remove_tree(store.root)


def test_deep_tree_in_tmp_swept_by_the_next_import(deep_store: ImageStore, tmp_path: Path) -> None:
    """Litter in tmp/ deeper than Python's recursion limit is cleared by the next writer,
    which then works: shutil.rmtree's RecursionError used to fail every import for good."""
    store = deep_store
    _deep_dir(store.tmp / "layer-crashed")
    [image] = store.import_path(write_oci_layout(None, tmp_path / "a", extra_layers=BASE))
    assert list(store.tmp.iterdir()) == []
    assert store.layer_dirs(image)[0].is_dir()


def test_deep_layer_dir_removed_by_gc(deep_store: ImageStore, tmp_path: Path) -> None:
    """gc removes an unused layer dir however deep it is (renamed into tmp/, then removed)."""
    store = deep_store
    [image] = store.import_path(write_oci_layout(None, tmp_path / "a", extra_layers=BASE))
    orphan = store.layers / ("0" * 64)
    _deep_dir(orphan / "rootfs")
    stats = store.gc()
    assert stats.layers_removed == 1
    assert not orphan.exists() and list(store.tmp.iterdir()) == []
    assert store.layer_dirs(image)[0].is_dir()
    assert store.gc().layers_removed == 0


def _import_cli(root: Path, path: Path) -> subprocess.CompletedProcess[str]:
    """`corral-agent image import` in a child with a deadline: a FIFO used to block it in
    open() for ever, and a hang must fail the test, not stall the run."""
    return subprocess.run(
        [sys.executable, "-m", "agent.main", "image", "import", str(path), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def test_fifo_index_json_refused(store: ImageStore, tmp_path: Path) -> None:
    """A FIFO as a layout's index.json is refused by name; the import does not block."""
    layout = write_oci_layout(None, tmp_path / "o", ref="fifo", extra_layers=BASE)
    (layout / "index.json").unlink()
    os.mkfifo(layout / "index.json")
    result = _import_cli(store.root, layout)
    assert result.returncode == 1
    assert f"{layout / 'index.json'}: is a FIFO, not a regular file" in result.stderr
    assert_empty(store)


def test_fifo_blob_refused(store: ImageStore, tmp_path: Path) -> None:
    """A FIFO in place of a layer blob is refused by name; nothing of the image is kept."""
    layout = write_oci_layout(None, tmp_path / "o", ref="fifo", extra_layers=APP)
    blob = layout_blob(layout, layout_layer_digests(layout)[1])
    blob.unlink()
    os.mkfifo(blob)
    result = _import_cli(store.root, layout)
    assert result.returncode == 1
    assert f"{blob}: is a FIFO, not a regular file" in result.stderr
    assert_empty(store)


def test_fifo_or_device_as_the_archive_refused(store: ImageStore, tmp_path: Path) -> None:
    """The path given to import, when it is not a directory, must be a regular file too."""
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    result = _import_cli(store.root, fifo)
    assert result.returncode == 1 and "is a FIFO, not a regular file" in result.stderr
    with pytest.raises(ImageError, match="/dev/null: is a character device"):
        store.import_path("/dev/null")


def test_symlinked_blobs_followed_devices_refused(store: ImageStore, tmp_path: Path) -> None:
    """A layout's symlinks are followed (as skopeo and umoci do; the content must still
    match its digest), even out of the layout; a link to a device is refused."""
    layout = write_oci_layout(None, tmp_path / "o", ref="linked", extra_layers=APP)
    blob = layout_blob(layout, layout_layer_digests(layout)[1])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(elsewhere)
    assert store.import_path(layout)[0].ref == "docker.io/library/linked:latest"
    store.remove("linked")
    store.gc()
    blob.unlink()
    blob.symlink_to("/dev/zero")  # read as a blob, it would stream for ever
    with pytest.raises(ImageError, match=rf"{blob}: is a character device"):
        store.import_path(layout)
    assert_empty(store)


def _bomb(size: int) -> bytes:
    """A layer tar holding one file of `size` zero bytes (gzip makes it a few kB)."""
    return layer_tar([directory("data"), file("data/zeros", b"\0" * size)])


def test_gzip_bomb_layer_refused_nothing_kept(tmp_path: Path) -> None:
    """A small gzip layer that unpacks past the store's max_layer_bytes fails the import,
    naming the layer and the limit; no staging, blob or layer is left."""
    store = ImageStore(tmp_path / "store", max_layer_bytes=1 << 20)
    bomb = _bomb(16 << 20)
    layout = write_oci_layout(None, tmp_path / "o", ref="bomb", extra_layers=[*BASE, bomb])
    assert layout_blob(layout, layout_layer_digests(layout)[1]).stat().st_size < 100_000
    with pytest.raises(ImageError) as err:
        store.import_path(layout)
    assert f"layer {sha256(bomb)}: unpacks to more than {1 << 20} bytes" in str(err.value)
    assert_empty(store)
    assert store.get("bomb") is None
    # Under the limit, the same store takes it; a bigger limit takes the bomb too.
    store.import_path(write_oci_layout(None, tmp_path / "b", ref="base", extra_layers=BASE))
    big = ImageStore(store.root, max_layer_bytes=32 << 20)
    assert big.import_path(layout)[0].size >= 16 << 20


def test_cli_import_max_layer_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`image import --max-layer-bytes N` bounds the import's layers."""
    root = str(tmp_path / "store")
    layout = write_oci_layout(None, tmp_path / "o", ref="bomb", extra_layers=[_bomb(4 << 20)])
    argv = ["import", str(layout), "--root", root, "--max-layer-bytes", str(1 << 20)]
    assert image_main(argv) == 1
    assert f"unpacks to more than {1 << 20} bytes" in capsys.readouterr().err
    assert image_main(["import", str(layout), "--root", root]) == 0


@pytest.mark.parametrize("target", ["index.json", "nowhere.json"])
def test_an_archive_link_that_loops_or_leads_nowhere_is_refused(
    store: ImageStore, tmp_path: Path, target: str
) -> None:
    """A tar member that links to itself made tarfile raise RecursionError, and one that
    links to no member a KeyError, out of the import; both are now an ImageError naming
    the member."""
    archive = tmp_path / "looping.tar"
    with tarfile.open(archive, "w") as tar:
        layout = tarfile.TarInfo("oci-layout")
        data = b'{"imageLayoutVersion": "1.0.0"}'
        layout.size = len(data)
        tar.addfile(layout, io.BytesIO(data))
        link = tarfile.TarInfo("index.json")
        link.type, link.linkname = tarfile.SYMTYPE, target
        tar.addfile(link)
    with pytest.raises(ImageError, match=r"index\.json is a link that loops or leads nowhere"):
        store.import_path(archive)
    assert_empty(store)
