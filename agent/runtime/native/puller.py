"""Pull images from registries into the node's image store, as a container's pull policy says.

    ensure(image, policy)
      Never         -> the store has it, or ErrImageNeverPull
      IfNotPresent  -> the store has it (event: already present), or pull
      Always        -> pull: resolve the tag; unchanged digest = nothing to download
    pull(image)      (one at a time per name: concurrent callers share the same pull)
      resolve         registry.py: manifest (through an index to this node's platform)
      download        the blobs the store lacks, concurrently, each hashed while it streams,
                      into <store>/pulls/<tmp>/ (outside the store's lock, so a slow
                      registry never blocks other images)
      commit          in a thread, in one store transaction: add_blob (verified again),
                      add_image (tarsafe unpacks each layer), names; any refusal rolls back
                      everything, and the staging directory is always removed

So a corrupt blob or a malicious layer leaves the store as it was: nothing is cached.
Every failure is an ErrImagePull RuntimeFailure with the registry's message.

One deliberate tolerance (agents are autonomous, DESIGN.md): with policy Always, when the
registry cannot be reached at all (no answer: DNS, refused, timed out) and the image is in
the store, the stored image is used and a `RegistryUnreachable` Warning event says so. An
answer from the registry (401, 404, a bad blob) is never papered over.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.runtime.native.images import Image, ImageStore
from agent.runtime.native.oci import (
    Descriptor,
    ImageError,
    ImageRef,
    digest_hex,
    parse_reference,
)
from agent.runtime.native.registry import (
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    Resolved,
)
from agent.runtime.native.rootfs import remove_tree
from agent.runtime.pulls import ERR_IMAGE_PULL, PullPolicy, shared_pull

_LOGGER = logging.getLogger(__name__)

Events = Callable[[str, str, str], None]  # reason, message, Normal|Warning
ProgressFn = Callable[[int, int], None]  # bytes done, bytes total
STALE_STAGING = 24 * 3600.0  # a staging dir this old belongs to a pull that died with its agent


@dataclass(frozen=True, slots=True)
class PullResult:
    image: Image
    seconds: float
    downloaded: int  # bytes fetched from the registry (0: everything was here already)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1000
    raise AssertionError("unreachable")


async def _all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; the first failure cancels the others and is raised as it is."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ImagePuller:
    """Pulls for one image store; share one per agent (it holds the registry client)."""

    def __init__(
        self, store: ImageStore, client: RegistryClient, *, progress_interval: float = 5.0
    ) -> None:
        self.store = store
        self.client = client
        self.progress_interval = progress_interval
        self._inflight: dict[str, asyncio.Future[PullResult]] = {}

    async def close(self) -> None:
        await self.client.close()

    # --- policy ---

    async def ensure(
        self,
        image: str,
        policy: PullPolicy,
        events: Events | None = None,
        *,
        local: Image | None = None,
    ) -> Image:
        """The image, pulled first if `policy` asks for it. Events: Pulling, Pulled (with the
        time taken), RegistryUnreachable. RuntimeFailure (ImageError) with reason
        ErrImagePull, ErrImageNeverPull or InvalidImageName when there is no image to run.
        `local`: the store's image for `image`, looked up by the caller a moment ago (a
        pod's sandbox is made with its images looked up): no second lookup. None: look."""

        def emit(reason: str, message: str, kind: str = "Normal") -> None:
            if events is not None:
                events(reason, message, kind)

        if policy == "Never":
            if local is not None:
                return local
            return await asyncio.to_thread(self.store.require, image)
        if local is None:
            local = await asyncio.to_thread(self.store.get, image)
        if local is not None and policy == "IfNotPresent":
            emit("Pulled", f'Container image "{image}" already present on machine')
            return local
        emit("Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        last = started

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= self.progress_interval:
                last = now
                emit("Pulling", f'Pulling image "{image}": {_human(done)} of {_human(total)}')

        try:
            result = await self.pull(image, progress=progress)
        except RegistryUnreachable as exc:
            if local is None:
                raise
            emit(
                "RegistryUnreachable",
                f"{exc}; using the image already present on the node ({local.digest})",
                "Warning",
            )
            return local
        emit(
            "Pulled",
            f'Successfully pulled image "{image}" in {time.monotonic() - started:.3f}s '
            f"({_human(result.downloaded)} downloaded). Image size: {result.image.size} bytes.",
        )
        return result.image

    # --- pulling ---

    async def pull(self, image: str, *, progress: ProgressFn | None = None) -> PullResult:
        """Pull `image` into the store (see the module docstring). Concurrent pulls of one
        name share the first one's work and result."""
        ref = parse_reference(image)  # InvalidImageName before any network
        return await shared_pull(self._inflight, ref.key(), lambda: self._pull(ref, progress))

    async def _pull(self, ref: ImageRef, progress: ProgressFn | None) -> PullResult:
        started = time.monotonic()
        what = f'failed to pull image "{ref}"'
        try:
            resolved = await self.client.resolve(ref, self.store.arch)
            present = await asyncio.to_thread(self.store.get, str(ref))
            if present is not None and present.digest == resolved.manifest_digest:
                _LOGGER.debug("%s is up to date (%s)", ref, present.digest)
                return PullResult(present, time.monotonic() - started, 0)
            wanted = [resolved.manifest.config, *resolved.manifest.layers]
            self._check_sizes(resolved.manifest.layers)
            missing = await asyncio.to_thread(self._missing, wanted)
            staging = await asyncio.to_thread(self._staging)
            try:
                total = sum(d.size for d in missing)
                done = 0

                def received(n: int) -> None:
                    nonlocal done
                    done += n
                    if progress is not None:
                        progress(done, total)

                limit = asyncio.Semaphore(self.client.settings.max_concurrent_downloads)

                async def fetch(desc: Descriptor) -> None:
                    async with limit:
                        dest = staging / digest_hex(desc.digest)
                        await self.client.fetch_blob(ref, desc, dest, received)

                await _all([fetch(d) for d in missing])
                image = await asyncio.to_thread(self._commit, ref, resolved, staging)
            finally:
                await asyncio.to_thread(remove_tree, staging)
        except RegistryError as exc:
            cls = RegistryUnreachable if isinstance(exc, RegistryUnreachable) else RegistryError
            raise cls(f"{what}: {exc}") from None
        except ImageError as exc:
            # A refused layer (path traversal, symlink escape...) or a corrupt image: the
            # transaction rolled back; to the pod it is a failed pull.
            raise RegistryError(self.client.scrub(f"{what}: {exc}"), ERR_IMAGE_PULL) from None
        seconds = time.monotonic() - started
        _LOGGER.info(
            "pulled %s %s in %.3fs (%s downloaded)", ref, image.digest, seconds, _human(total)
        )
        return PullResult(image, seconds, total)

    def _check_sizes(self, layers: list[Descriptor]) -> None:
        """Refuse, before any download, a layer whose declared size is past what a layer may
        unpack to: the download itself is bounded only by the size the manifest declares,
        which whoever pushed the image chose (a compressed layer is not bigger than its tar
        stream, but for a few bytes of framing)."""
        limit = self.store.max_layer_bytes
        for desc in layers:
            if desc.size > limit:
                raise ImageError(
                    f"layer {desc.digest}: declares {desc.size} bytes, more than the {limit} "
                    "a layer may unpack to (the agent's max_layer_bytes); refusing it"
                )

    def _missing(self, descs: list[Descriptor]) -> list[Descriptor]:
        seen: set[str] = set()
        out = []
        for desc in descs:
            if desc.digest not in seen and not self.store.has_blob(desc.digest):
                out.append(desc)
            seen.add(desc.digest)
        return out

    def _staging(self) -> Path:
        """A fresh download directory; clears ones left by pulls that died (blocking)."""
        base = self.store.root / "pulls"
        base.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for entry in base.iterdir():
            try:
                if now - entry.stat().st_mtime > STALE_STAGING:
                    remove_tree(entry)
            except FileNotFoundError:
                continue
        return Path(tempfile.mkdtemp(dir=base, prefix="pull-"))

    def _commit(self, ref: ImageRef, resolved: Resolved, staging: Path) -> Image:
        """File the downloaded image in one store transaction (blocking)."""
        with self.store.transaction() as txn:
            if resolved.index_digest is not None and resolved.index_bytes is not None:
                txn.add_blob(
                    io.BytesIO(resolved.index_bytes),
                    resolved.index_digest,
                    len(resolved.index_bytes),
                )
            txn.add_blob(
                io.BytesIO(resolved.manifest_bytes),
                resolved.manifest_digest,
                len(resolved.manifest_bytes),
            )

            def fetch(desc: Descriptor) -> None:
                path = staging / digest_hex(desc.digest)
                if not os.path.exists(path):
                    raise ImageError(f"blob {desc.digest} was not downloaded")
                with open(path, "rb") as src:
                    txn.add_blob(src, desc.digest, desc.size)

            aliases = [resolved.index_digest] if resolved.index_digest else []
            txn.add_image(resolved.manifest_digest, [ref], fetch=fetch, aliases=aliases)
        image = self.store.get(str(ref))
        if image is None:  # the transaction committed; only a concurrent rm could do this
            raise ImageError(f"image {ref} vanished right after it was pulled", ERR_IMAGE_PULL)
        return image


def pull_main(store: ImageStore, args: Any) -> int:
    """`corral-agent image pull REF [--config FILE] [--insecure-registry HOST] [--auth-file F]`.

    Registries and credentials come from the agent's config (file, then CORRAL_AGENT_*
    environment), so the command pulls exactly as the agent would.
    """
    from agent.config import ENV_PREFIX, AgentConfig
    from agent.runtime.pulls import settings_from
    from common.config import ConfigError, load_config

    try:
        config = load_config(
            AgentConfig,
            ["--config", args.config] if args.config else [],
            prog="corral-agent image pull",
            description="",
            env_prefix=ENV_PREFIX,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store.max_layer_bytes = config.max_layer_bytes
    settings = settings_from(config)
    settings.insecure |= {h.lower() for h in args.insecure_registry}
    if args.auth_file:
        settings.auth_file = args.auth_file

    async def pull() -> PullResult:
        puller = ImagePuller(store, RegistryClient(settings))
        try:
            return await puller.pull(args.ref)
        finally:
            await puller.close()

    result = asyncio.run(pull())  # ImageError is reported by image_main
    print(
        f"pulled {args.ref} {result.image.digest} in {result.seconds:.2f}s "
        f"({_human(result.downloaded)} downloaded)"
    )
    return 0
