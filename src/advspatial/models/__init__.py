"""Reference models for the demo, the tests and the benchmarks."""

from advspatial.models.resnet_cifar import resnet18_cifar
from advspatial.models.small_cnn import SmallCNN

__all__ = ["SmallCNN", "resnet18_cifar"]
