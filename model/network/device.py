"""Choosing where the model runs: auto picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

from collections.abc import Callable

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(requested: str, cuda_available: Callable[[], bool], mps_available: Callable[[], bool]) -> str:
    """The device to use; raises ValueError when the requested one is absent."""
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, not {requested!r}")
    if requested == "auto":
        if cuda_available():
            return "cuda"
        if mps_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not cuda_available():
        raise ValueError("--device cuda: no CUDA GPU is available to PyTorch here")
    if requested == "mps" and not mps_available():
        raise ValueError("--device mps: Apple's Metal (MPS) is not available to PyTorch here")
    return requested


def resolve_device(requested: str = "auto") -> str:
    import torch

    return pick_device(requested, torch.cuda.is_available, lambda: torch.backends.mps.is_available())


def inference_dtype_name(device: str, bf16_supported: bool = True) -> str:
    """fp32 on the CPU, bf16 on GPUs that have it, else fp16."""
    if device == "cpu":
        return "float32"
    if device == "cuda" and bf16_supported:
        return "bfloat16"
    return "float16"


def inference_dtype(device: str):
    import torch

    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return getattr(torch, inference_dtype_name(device, bf16))
