"""Write predictions named by case id, atomically, in the input's geometry."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import SaveImaged

from monai_effseg.data.layouts import case_id_from_path


class SavePredictiond(SaveImaged):
    """Save ``d[key]`` to ``<output_dir>/<case id><output_postfix>.nii.gz``.

    MONAI's ``SaveImaged`` names files after the input file, so KiTS's ``case_*/imaging.nii.gz`` layout would give
    every case the same name; this names them by ``d[case_id_key]`` (or the folder of a generically named input).
    The write goes to a temporary file that is renamed into place, so a crash never leaves a half-written NIfTI.

    It *is* a ``SaveImaged`` (same ``SaveImage`` saver, only the file name differs), so hosts that drop the saver
    of a bundle's ``postprocessing`` and write the result themselves recognise it: MONAI Label's ``monaibundle``
    app filters ``SaveImaged`` instances out and returns ``d["pred"]`` to the client instead of writing to
    ``output_dir``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        case_id_key: str = "case_id",
        output_postfix: str = "",
        output_dtype=np.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        from monai_effseg.data.io import AtomicNibabelWriter

        super().__init__(
            keys,
            output_dir=str(output_dir),
            output_ext=".nii.gz",
            output_dtype=output_dtype,
            resample=False,
            writer=AtomicNibabelWriter,
            print_log=False,
            savepath_in_metadict=True,
            allow_missing_keys=allow_missing_keys,
        )
        self.output_dir = Path(output_dir)
        self.case_id_key = case_id_key
        self.output_postfix = output_postfix

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            case_id = d.get(self.case_id_key) or case_id_from_path(image.meta["filename_or_obj"])
            target = self.output_dir / f"{case_id}{self.output_postfix}.nii.gz"
            source = image.meta.get("filename_or_obj")
            if source and Path(str(source)).exists() and target.exists() and target.samefile(str(source)):
                # last line of defence (inference_datalist refuses this before the run): never replace an input
                raise FileExistsError(
                    f"refusing to write the prediction {target} over its input {source}; pass another output_dir"
                )
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.saver(image, filename=str(self.output_dir / f"{case_id}{self.output_postfix}"))
        return d
