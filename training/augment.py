"""Batched geometric augmentation on tensors (one `grid_sample` per batch, not per-image PIL)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineRanges:
    """Uniform ranges: rotation and shear in degrees, translation and scale as fractions."""

    rotation: float = 10.0
    translate: float = 0.1
    scale: float = 0.1
    shear: float = 10.0


def random_affine(images: torch.Tensor, ranges: AffineRanges, generator: torch.Generator) -> torch.Tensor:
    """Apply an independent random affine warp to each image of an NCHW float batch (zero fill)."""
    n = images.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * bound

    angle = torch.deg2rad(uniform(ranges.rotation))
    shear = torch.tan(torch.deg2rad(uniform(ranges.shear)))
    scale = 1 + uniform(ranges.scale)
    # Forward map: out = scale * R(angle) @ Shear_x(shear) @ in + t, in normalised [-1, 1] coordinates.
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.stack(
        [
            torch.stack([cos, cos * shear - sin], dim=1),
            torch.stack([sin, sin * shear + cos], dim=1),
        ],
        dim=1,
    ) * scale.view(n, 1, 1)
    shift = torch.stack([uniform(ranges.translate), uniform(ranges.translate)], dim=1) * 2
    inverse = torch.linalg.inv(forward)
    # affine_grid wants the output->input map: in = inverse @ (out - t).
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode="zeros", align_corners=False)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator, *,
                     flip: bool = True) -> torch.Tensor:
    """The CIFAR augmentation on an NCHW batch: pad each side by `padding` (reflection), cut a random crop of
    the original size per image, and mirror each image left-right with probability 1/2 (with `flip`).
    Offsets and flips are drawn from `generator`; `padding` 0 and no `flip` return `images` unchanged."""
    n, _, height, width = images.shape
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding), mode="reflect")
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(height))[:, None, :, None]  # n x 1 x H x 1
        cols = (dx[:, None] + torch.arange(width))[:, None, None, :]  # n x 1 x 1 x W
        batch = torch.arange(n)[:, None, None, None]
        channels = torch.arange(images.shape[1])[None, :, None, None]
        out = padded[batch, channels, rows.to(images.device), cols.to(images.device)]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(images.device)[:, None, None, None]
        out = torch.where(mirror, out.flip(3), out)
    return out
