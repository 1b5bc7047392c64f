"""Reference models for the demo, the tests and the benchmarks."""

from advspatial.models.heatmap_regressor import HeatmapRegressor, soft_argmax
from advspatial.models.resnet_cifar import resnet18_cifar
from advspatial.models.small_cnn import SmallCNN
from advspatial.models.unet import UNet

__all__ = ["HeatmapRegressor", "SmallCNN", "UNet", "resnet18_cifar", "soft_argmax"]
