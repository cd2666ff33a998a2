"""Lays out the test sets of the MSPAN paper's restoration tables (DuRN's protocols) as LQ/GT folders.

  python scripts/prepare_restoration_data.py --set didmdn --src DID-MDN/test --out ~/ir_data/didmdn/test
  python scripts/prepare_restoration_data.py --set polyu --src PolyU/test1 --out ~/ir_data/polyu/test

didmdn: each DID-MDN image holds the rainy image (left half) and the clean one (right half) side by
side, as DuRN's loader reads them; they are written as <out>/LQ/<stem>.png and <out>/GT/<stem>.png.
polyu: the PolyU real-world noisy images (Xu et al. 2018) come as <camera>_<scene>_<i>_real.<ext>
(noisy) beside <camera>_<scene>_<i>_mean.<ext> (the clean mean of many shots); they are written as
PNGs to <out>/LQ/ and <out>/GT/ under their own names, which pair by name (docs/data.md).
Then `--config.data.manual_dir` (or `--manual-dir`) pointing at the folder above `<set>/test` makes
`config.eval.datasets = ("didmdn",)` / `("polyu",)` find them (docs/restoration.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from mspan_jax import cli
from mspan_jax.data.images import list_images, read_image, write_image
from mspan_jax.errors import DataError
from mspan_jax.progress import ProgressLine

SETS = ("didmdn", "polyu")
_SET = flags.DEFINE_enum("set", None, list(SETS), "Which test set --src holds.")
_SRC = flags.DEFINE_string("src", None, "Folder of the set's images as distributed.")
_OUT = flags.DEFINE_string("out", None, "Output folder; LQ/ and GT/ are created in it.")
flags.mark_flags_as_required(["set", "src", "out"])

_POLYU = re.compile(r"^(?P<key>.+)_(?P<role>real|mean)$", re.IGNORECASE)


def split_side_by_side(img):
    """(left half, right half) of an image whose two halves are the same size (DID-MDN: rainy |
    clean); ValueError for an odd width."""
    h, w = img.shape[:2]
    if w % 2:
        raise DataError(f"a {w}x{h} image has an odd width: not two halves side by side")
    return img[:, : w // 2], img[:, w // 2:]


def polyu_role(path: Path) -> tuple[str, str]:
    """(pairing key, 'LQ' or 'GT') of a PolyU file name; ValueError for another name."""
    match = _POLYU.match(path.stem)
    if match is None:
        raise DataError(f"{path}: not a PolyU file name (<camera>_<scene>_<i>_real or _mean)")
    return match["key"].lower(), "LQ" if match["role"].lower() == "real" else "GT"


def main(argv: Sequence[str]) -> None:
    paths = list_images(_SRC.value)
    out = Path(_OUT.value)
    if not paths:
        raise DataError(f"{_SRC.value}: no images")
    progress = ProgressLine(len(paths), _SET.value)
    written = {"LQ": 0, "GT": 0}
    if _SET.value == "didmdn":
        for path in paths:
            try:
                lq, gt = split_side_by_side(read_image(path))
            except ValueError as e:
                raise DataError(f"{path}: {e}") from None
            write_image(out / "LQ" / f"{path.stem}.png", lq)
            write_image(out / "GT" / f"{path.stem}.png", gt)
            written["LQ"] += 1
            written["GT"] += 1
            progress.update(path.name)
    else:
        roles = {path: polyu_role(path) for path in paths}
        keys = {role: {k for k, r in roles.values() if r == role} for role in ("LQ", "GT")}
        unpaired = sorted(keys["LQ"] ^ keys["GT"])
        if unpaired:
            raise DataError(f"{_SRC.value}: {len(unpaired)} images without a partner, e.g. "
                             f"{unpaired[0]!r}")
        for path, (_, role) in roles.items():
            write_image(out / role / f"{path.stem}.png", read_image(path))
            written[role] += 1
            progress.update(path.name)
    print(f"wrote {written['LQ']} LQ and {written['GT']} GT images ({_SET.value}) to {out}")


if __name__ == "__main__":
    cli.run(main)
