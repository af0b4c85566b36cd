"""The PyTorch reference: DANet's attention modules with the original names."""

from reference_torch.attention import CAM_Module, PAM_Module

__all__ = ["CAM_Module", "PAM_Module"]
