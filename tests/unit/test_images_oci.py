"""Image references, media types and OCI/Docker JSON documents: parsing and refusals."""

from __future__ import annotations

import json

import pytest

from agent.runtime.native import oci
from agent.runtime.native.oci import (
    ImageError,
    Platform,
    parse_config,
    parse_descriptor,
    parse_manifest,
    parse_reference,
    select_platform,
)
from common import version

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:latest", "docker.io/library/busybox:latest"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app:v1", "docker.io/user/app:v1"),
        ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
        ("localhost/app:dev", "localhost/app:dev"),
        ("localhost:5000/a/b/c:1.0-rc_1", "localhost:5000/a/b/c:1.0-rc_1"),
        ("registry.example.com:443/x", "registry.example.com:443/x:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"busybox:1.36@{D}", f"docker.io/library/busybox@{D}"),  # the digest wins
        ("my-app__x/y_z.v2", "docker.io/my-app__x/y_z.v2:latest"),
    ],
)
def test_reference_normalized_like_docker(text: str, key: str) -> None:
    """Every spelling of a name files under Docker's fully qualified form."""
    assert parse_reference(text).key() == key


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("docker.io/library/busybox", "busybox"),
        ("user/app", "user/app"),
        ("ghcr.io/org/app", "ghcr.io/org/app"),
    ],
)
def test_familiar_repository(text: str, familiar: str) -> None:
    """The short spelling strips docker.io and library/."""
    assert parse_reference(text).familiar_repository == familiar


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "BusyBox",
        "busybox:",
        "busybox:-bad",
        "busybox@sha256:1234",
        "busybox@md5:" + "a" * 32,
        "a//b",
        "-lead",
        "x" * 256,
        "docker.io/Library/busybox",
    ],
)
def test_bad_references_refused(text: str) -> None:
    """Malformed names are refused with InvalidImageName."""
    with pytest.raises(ImageError) as err:
        parse_reference(text)
    assert err.value.reason == oci.INVALID_IMAGE_NAME
    assert repr(text) in str(err.value)


def test_str_roundtrip() -> None:
    """str() of a reference parses back to itself."""
    ref = parse_reference(f"localhost:5000/app:v2@{D}")
    assert str(ref) == f"localhost:5000/app:v2@{D}"
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("machine", "arch"),
    [("x86_64", "amd64"), ("aarch64", "arm64"), ("armv7l", "arm"), ("s390x", "s390x")],
)
def test_host_arch(monkeypatch: pytest.MonkeyPatch, machine: str, arch: str) -> None:
    """platform.machine() maps to the GOARCH spelling image platforms use."""
    monkeypatch.setattr(version.platform, "machine", lambda: machine)
    assert version.host_arch() == arch


def _desc(digest: str = D, arch: str | None = None) -> dict[str, object]:
    desc: dict[str, object] = {"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": 10}
    if arch:
        desc["platform"] = {"os": "linux", "architecture": arch}
    return desc


def test_select_platform_picks_this_arch() -> None:
    """From an index, the linux manifest for the node's arch is chosen."""
    manifests = [parse_descriptor(_desc(D, "arm64"), "m"), parse_descriptor(_desc(E, "amd64"), "m")]
    assert select_platform(manifests, "amd64", "idx").digest == E
    with pytest.raises(
        ImageError, match=r"no image for linux/s390x \(has: linux/amd64, linux/arm64"
    ):
        select_platform(manifests, "s390x", "idx")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ("nope", "must be an object"),
        ({"digest": D, "size": 1}, "no mediaType"),
        ({"mediaType": "x", "digest": "sha512:" + "a" * 128, "size": 1}, "digest"),
        ({"mediaType": "x", "digest": "sha256:../../etc", "size": 1}, "digest"),
        ({"mediaType": "x", "digest": D, "size": -1}, "bad size"),
        ({"mediaType": "x", "digest": D, "size": True}, "bad size"),
    ],
)
def test_bad_descriptor(obj: object, match: str) -> None:
    """Descriptors with missing or malformed fields are refused, naming the problem."""
    with pytest.raises(ImageError, match=match):
        parse_descriptor(obj, "where")


def test_document_kind() -> None:
    """Index or manifest by mediaType (or shape); schema 1 and mismatches are refused."""
    assert oci.document_kind({"manifests": []}, oci.OCI_INDEX, "x") == "index"
    assert oci.document_kind({"layers": []}, None, "x") == "manifest"
    assert oci.document_kind({"mediaType": oci.DOCKER_LIST}, None, "x") == "index"
    with pytest.raises(ImageError, match="schema 1"):
        oci.document_kind({"schemaVersion": 1, "fsLayers": []}, None, "x")
    with pytest.raises(ImageError, match="but its descriptor says"):
        oci.document_kind({"mediaType": oci.OCI_INDEX}, oci.OCI_MANIFEST, "x")
    with pytest.raises(ImageError, match="unsupported media type"):
        oci.document_kind({"mediaType": "application/vnd.cncf.helm.chart"}, None, "x")


def test_manifest_refuses_non_images() -> None:
    """An artifact (non-image config) or an unknown layer type is not a container image."""
    base = {"config": {"mediaType": oci.OCI_CONFIG, "digest": D, "size": 2}, "layers": []}
    assert parse_manifest(base, "m").config.digest == D
    helm = {
        **base,
        "config": {"mediaType": "application/vnd.cncf.helm.config", "digest": D, "size": 2},
    }
    with pytest.raises(ImageError, match="not a container image"):
        parse_manifest(helm, "m")
    encrypted = {
        **base,
        "layers": [{"mediaType": oci.OCI_LAYER_GZIP + "+encrypted", "digest": E, "size": 1}],
    }
    with pytest.raises(ImageError, match=r"unsupported media type .*\+encrypted"):
        parse_manifest(encrypted, "m")


def test_parse_config() -> None:
    """Run settings, platform and diff_ids come out of the config blob."""
    blob = json.dumps(
        {
            "architecture": "arm64",
            "os": "linux",
            "variant": "v8",
            "config": {
                "Entrypoint": ["/init"],
                "Cmd": ["serve", "--port=80"],
                "Env": ["A=1"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
            },
            "rootfs": {"type": "layers", "diff_ids": [D, E]},
        }
    ).encode()
    parsed = parse_config(blob, "cfg")
    assert parsed.platform == Platform("linux", "arm64", "v8")
    assert parsed.diff_ids == [D, E]
    assert parsed.config == oci.ImageConfig(
        ["/init"], ["serve", "--port=80"], ["A=1"], "/srv", "1000:1000"
    )
    empty = parse_config(json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode(), "c")
    assert empty.config == oci.ImageConfig()


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b"{}", "rootfs.type"),
        (b'{"rootfs": {"type": "layers", "diff_ids": ["x"]}}', "diff_id"),
        (b'{"rootfs": {"type": "layers", "diff_ids": []}, "config": {"Cmd": "sh"}}', "Cmd"),
    ],
)
def test_bad_config(doc: bytes, match: str) -> None:
    """Configs that are not what they claim are refused with the field named."""
    with pytest.raises(ImageError, match=match):
        parse_config(doc, "cfg")


def test_names_from_annotations() -> None:
    """containerd's full name wins; a bare OCI tag names no repository."""
    assert oci.names_from_annotations(
        {oci.ANNOTATION_FULL_NAME: "docker.io/library/a:1", oci.ANNOTATION_REF_NAME: "1"}
    ) == [parse_reference("a:1")]
    assert oci.names_from_annotations({oci.ANNOTATION_REF_NAME: "user/b:2"}) == [
        parse_reference("user/b:2")
    ]
    assert oci.names_from_annotations({oci.ANNOTATION_REF_NAME: "latest"}) == []
    assert oci.names_from_annotations({}) == []
