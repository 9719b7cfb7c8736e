"""monai-effseg: efficient 3D networks for kidney and liver tumour segmentation in CT, as MONAI bundles."""

__version__ = "0.1.0"
