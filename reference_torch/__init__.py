"""The PyTorch reference: DANet's attention modules and head, with the original names."""

from reference_torch.attention import CAM_Module, PAM_Module
from reference_torch.head import DANetHead

__all__ = ["CAM_Module", "DANetHead", "PAM_Module"]
