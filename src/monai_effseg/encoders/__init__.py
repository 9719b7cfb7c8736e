"""Registered encoders. Importing this package registers every encoder in :data:`ENCODERS`."""

from monai_effseg.encoders.registry import ENCODERS, build_encoder, register_encoder
from monai_effseg.encoders.table import TableEncoder
from monai_effseg.encoders.generic import generic_encoder, generic_stage_table  # noqa: E402

__all__ = ["ENCODERS", "build_encoder", "register_encoder", "TableEncoder", "generic_encoder", "generic_stage_table"]
