"""The image gc loop outlives a pass that fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.imagegc import ImageCollector, ImageGcPolicy, run_image_gc
from agent.runtime.native.images import ImageStore


def test_a_pass_on_a_corrupt_store_does_not_end_the_loop(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.root.mkdir()
    store.state_path.write_text("{not json")  # store.list() raises ImageError
    collector = ImageCollector(store, ImageGcPolicy(period=0.01))

    async def main() -> None:
        task = asyncio.create_task(run_image_gc(collector, list))
        try:
            async with asyncio.timeout(5):
                while collector.failures < 3:
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
