"""The PyTorch reference: DANet's attention modules, head, backbone and whole network, with
the original names."""

from reference_torch.attention import CAM_Module, PAM_Module
from reference_torch.danet import DANet
from reference_torch.head import DANetHead
from reference_torch.resnet import DilatedResNet

__all__ = ["CAM_Module", "DANet", "DANetHead", "DilatedResNet", "PAM_Module"]
