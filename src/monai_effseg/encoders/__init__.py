"""Registered encoders. Importing this package registers every encoder in :data:`ENCODERS`."""

from monai_effseg.encoders.nnunet import nnunet_encoder, nnunet_stage_table  # noqa: E402
from monai_effseg.encoders.registry import ENCODERS, build_encoder, register_encoder
from monai_effseg.encoders.table import TableEncoder

__all__ = ["ENCODERS", "build_encoder", "register_encoder", "TableEncoder", "nnunet_encoder", "nnunet_stage_table"]
from monai_effseg.encoders.efficientnet import EfficientNetEncoder, efficientnet_encoder  # noqa: E402  (registers efficientnet-b0..b7, efficientnetv2-s/m/l)

__all__ += ["EfficientNetEncoder", "efficientnet_encoder"]
from monai_effseg.encoders.flexunet import EfficientNetFlexEncoder  # noqa: E402  (registers "<encoder>-3d" in MONAI's FLEXUNET_BACKBONE)

__all__ += ["EfficientNetFlexEncoder"]
from monai_effseg.encoders.lite import PRESETS as LITE_PRESETS  # noqa: E402  (registers Tustumi's, e.g. "mobilenetv2-2d-top")
from monai_effseg.encoders.lite import lite_encoder, preset_rows  # noqa: E402

__all__ += ["LITE_PRESETS", "lite_encoder", "preset_rows"]
