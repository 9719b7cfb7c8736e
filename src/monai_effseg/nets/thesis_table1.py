"""Table 1 of Martinho, "Efficient Algorithms for Medical Image Segmentation" (MSc thesis, appendix A) as data, with the
measured reference figures of tests/data/reference/architectures.md section 4, for the profile benchmark and the
tests.

Units as printed in the thesis: parameters in millions, FLOPs (2 x MAC) in units of 1e12. "dec" is the decoder's conv
stages only; network and encoder parameters include the unused ImageNet head.
"""

from __future__ import annotations

# registered network name: (FLOPs net, enc, dec [T]; params net, enc, dec [M])
THESIS_TABLE1: dict[str, tuple[float, float, float, float, float, float]] = {
    "nnunet": (0.958, 0.279, 0.663, 31.196, 14.025, 15.349),
    "fullyeffgenericunet": (0.861, 0.279, 0.565, 28.246, 14.025, 12.399),
    "efficientunet-b0": (0.608, 0.009658, 0.581, 19.408, 5.969, 11.617),
    "efficientunet-b1": (0.61, 0.011926, 0.581, 22.165, 8.727, 11.617),
    "efficientunet-b2": (0.611, 0.012503, 0.582, 23.768, 10.124, 11.741),
    "efficientunet-b3": (0.655, 0.017916, 0.62, 27.509, 13.595, 11.928),
    "efficientunet-b4": (0.69, 0.023469, 0.65, 35.753, 21.406, 12.198),
    "efficientunet-b5": (0.701, 0.032024, 0.652, 47.829, 33.097, 12.419),
    "efficientunet-b6": (0.749, 0.042989, 0.689, 61.875, 46.697, 12.702),
    "efficientunet-b7": (0.797, 0.059897, 0.721, 86.96, 71.32, 12.999),
    "fullyefficientunet-b0": (0.507, 0.009658, 0.481, 15.201, 5.969, 7.41),
    "fullyefficientunet-b1": (0.509, 0.011926, 0.481, 17.958, 8.727, 7.41),
    "fullyefficientunet-b2": (0.51, 0.012503, 0.481, 19.574, 10.124, 7.547),
    "fullyefficientunet-b3": (0.553, 0.017916, 0.519, 23.344, 13.595, 7.763),
    "fullyefficientunet-b4": (0.69, 0.023469, 0.65, 35.753, 21.406, 12.198),  # a copy of EfficientUNet-b4's row
    "fullyefficientunet-b5": (0.599, 0.032024, 0.55, 43.756, 33.097, 8.346),
    "fullyefficientunet-b6": (0.647, 0.042989, 0.587, 57.874, 46.697, 8.702),
    "fullyefficientunet-b7": (0.695, 0.059897, 0.618, 83.044, 71.32, 9.083),
    "efficientunetv2-s": (0.678, 0.094991, 0.567, 38.267, 24.321, 12.287),
    "efficientunetv2-m": (0.724, 0.139, 0.568, 74.065, 59.216, 12.536),
    "efficientunetv2-l": (0.924, 0.327, 0.58, 143.0, 128.0, 13.131),  # printed as 0.143G / 0.128G
    "fullyefficientunetv2-s": (0.576, 0.094991, 0.465, 34.163, 24.321, 8.183),
    "fullyefficientunetv2-m": (0.622, 0.139, 0.466, 70.008, 59.216, 8.48),
    "fullyefficientunetv2-l": (0.822, 0.327, 0.478, 139.0, 128.0, 9.244),  # printed as 0.139G / 0.128G
}

# tests/data/reference/architectures.md section 4: "used params" (no ImageNet head) and the sketch's 2 x MAC
# network FLOPs [T]
REFERENCE_USED_PARAMS_M: dict[str, float] = {
    "efficientunet-b0": 17.715,
    "fullyefficientunet-b0": 13.508,
    "efficientunet-b7": 82.756,
    "efficientunetv2-s": 36.012,
    "efficientunetv2-m": 71.351,
    "efficientunetv2-l": 140.452,  # the sketch's V2-L has a 32-channel stem; the d-li14 port (ours) has 24: 140.432
}
REFERENCE_2XMAC_T: dict[str, float] = {
    "nnunet": 0.955,
    "efficientunet-b0": 0.605,
    "fullyefficientunet-b0": 0.422,
    "efficientunet-b7": 0.791,
    "efficientunetv2-s": 0.675,
    "efficientunetv2-m": 0.720,
    "efficientunetv2-l": 0.956,  # 32-channel stem; 0.920 with the d-li14 port's 24 (thesis: 0.924)
}
