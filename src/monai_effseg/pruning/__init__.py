"""Sauron filter pruning (Valverde, Shatillo, Tohka, "Sauron U-Net: Simple automated redundancy elimination in medical
image segmentation via filter pruning", Neurocomputing 594:127817, 2024).

- :class:`ChannelGraph`: prunable layers of any network built from the block library, and who reads them.
- :class:`SauronRegularizer` + :class:`SauronLoss`: the ``lambda * delta_opt`` term, by forward hooks.
- :class:`SauronPruner`: end-of-epoch pruning (``delta_prune`` < per-layer ``tau``) as an ignite handler;
  :class:`SauronStatsHandler` logs the compression.
- :func:`prune_channels` / :func:`resize_channels`: physical removal, optimizer state included.
- :func:`make_prunable`: per-layer widths stored next to the weights; loading a pruned state dict resizes the net.
- :class:`SauronUNet` (registered as ``"sauron_nnunet"``): the nnU-Net of the paper's KiTS experiments;
  :func:`sauron_kits_augmentation` and :data:`SAURON_KITS_RECIPE`: its data recipe.
"""

from monai_effseg.nets.sauron_unet import SAURON_FEATURES, SauronUNet, he_normal_init, sauron_nnunet
from monai_effseg.pruning.compression import conv_flops, plot_compression
from monai_effseg.pruning.distances import delta_opt, delta_prune
from monai_effseg.pruning.graph import ChannelGraph, PrunableLayer, Segment
from monai_effseg.pruning.handler import SauronPruner, SauronStatsHandler, select_channels
from monai_effseg.pruning.recipe import SAURON_KITS_EXCLUDED, SAURON_KITS_RECIPE, sauron_kits_augmentation
from monai_effseg.pruning.regularizer import SauronLoss, SauronRegularizer
from monai_effseg.pruning.schedule import ThresholdSchedule
from monai_effseg.pruning.surgery import WIDTHS_KEY, prune_channels, resize_channels, track_optimizer
from monai_effseg.pruning.widths import make_prunable, stored_widths, widths_from_state_dict

__all__ = [
    "WIDTHS_KEY",
    "ChannelGraph",
    "PrunableLayer",
    "SAURON_FEATURES",
    "SAURON_KITS_EXCLUDED",
    "SAURON_KITS_RECIPE",
    "SauronLoss",
    "SauronPruner",
    "SauronRegularizer",
    "SauronStatsHandler",
    "SauronUNet",
    "Segment",
    "ThresholdSchedule",
    "conv_flops",
    "delta_opt",
    "delta_prune",
    "he_normal_init",
    "make_prunable",
    "plot_compression",
    "prune_channels",
    "resize_channels",
    "sauron_kits_augmentation",
    "sauron_nnunet",
    "select_channels",
    "stored_widths",
    "track_optimizer",
    "widths_from_state_dict",
]
