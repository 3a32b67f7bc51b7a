"""Build a busybox OCI image layout from Debian's busybox-static, to try corral without a registry.

apt-get install -y busybox-static
python3 examples/busybox-image.py ./busybox-oci
corral-agent image import ./busybox-oci --root .corral/agent/images
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.imagebuild import build_busybox_rootfs, write_oci_layout


def main() -> int:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "busybox-oci")
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = build_busybox_rootfs(Path(tmp) / "rootfs")
        write_oci_layout(rootfs, dest, ref="busybox:latest")
    print(f"wrote an OCI image layout of busybox:latest to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
