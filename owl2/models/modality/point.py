"""OneLLM's point-cloud tokenizer (paper appendix C.1, Eq. 5; official `lib/point_utils.py`, `PointPatchEmbed`).

A cloud `(N, P, 6)` (PointLLM's 8192 points, xyz then rgb) becomes 1024 tokens:

    centres   = farthest point sampling of 1024 points          (pointnet2's CUDA kernel in the release)
    groups    = the 32 nearest points of each centre             (`torch.cdist` + top-k, as the release)
    features  = the raw 6-d features of each group's points      (not centred: the release computes the
                                                                   relative xyz, then discards it)
    tokens    = max over each group of Conv2d(6, width, 1)       (in float32, as the release)

The release picks centres and neighbours on columns 3:6 (`x[:, :, 3:]`), the colours under
`pc_norm`'s layout; `OneLLMTokenizerConfig.point_sample_on` chooses "rgb" (the release) or "xyz".
Here sampling and grouping are pure torch, batched, on any device: no compiled extension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from owl2.config import OneLLMTokenizerConfig
from owl2.models.modality.shapes import check_shape

_FAR = 1e10  # pointnet2's initial distance to the (empty) sampled set


@torch.no_grad()
def farthest_point_sample(coords: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Iterative farthest point sampling, pointnet2's convention: `(N, P, 3)` -> `(N, num_samples)` indices.

    The first sample is point 0 (not a random point); each next one is the point whose squared distance
    to the samples so far is largest, the first such index on a tie. This is the release's CUDA kernel
    (`furthest_point_sampling_kernel`) up to float rounding of the distances, which could only change
    the choice between points at equal distance. The loop runs over the samples (inherently sequential);
    each step is vectorised over the batch and the points.
    """
    n, num_points, _ = coords.shape
    if num_samples > num_points:
        raise ValueError(f"cannot sample {num_samples} points from a cloud of {num_points}")
    coords = coords.float()
    batch = torch.arange(n, device=coords.device)
    indices = torch.zeros(n, num_samples, dtype=torch.long, device=coords.device)
    nearest = torch.full((n, num_points), _FAR, dtype=torch.float32, device=coords.device)  # (N, P)
    last = indices[:, 0]
    for j in range(1, num_samples):
        delta = coords - coords[batch, last].unsqueeze(1)  # (N, P, 3)
        # Summed x, y, z in the kernel's order, so ties break as they do there.
        distance = delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1] + delta[..., 2] * delta[..., 2]
        nearest = torch.minimum(nearest, distance)
        last = nearest.argmax(dim=1)  # the first maximum, as the kernel keeps the first on a tie
        indices[:, j] = last
    return indices


@torch.no_grad()
def knn_indices(coords: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """The `k` nearest points of each centre, nearest first: `(N, P, 3)`, `(N, G, 3)` -> `(N, G, k)`.

    As the release's `KNN`: Euclidean `torch.cdist(points, centres)` and the smallest `k` over the points.
    """
    distances = torch.cdist(coords, centres)  # (N, P, G)
    return distances.topk(k, dim=1, largest=False).indices.transpose(1, 2)  # (N, G, k)


class PointTokenizer(nn.Module):
    """`(N, P, features)` point clouds -> `(N, num_groups, width)` tokens (official key `conv1.point`)."""

    def __init__(self, config: OneLLMTokenizerConfig, width: int):
        super().__init__()
        self.num_groups, self.group_size = config.point_num_groups, config.point_group_size
        self.num_features = config.point_num_features
        self.sample_columns = slice(0, 3) if config.point_sample_on == "xyz" else slice(3, 6)
        self.proj = nn.Conv2d(config.point_num_features, width, kernel_size=1)  # official conv1.conv1

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_shape("point", points, ("N", "P", self.num_features), "(batch, points, features)")
        if points.shape[1] < max(self.num_groups, self.group_size):
            raise ValueError(
                f"point input must have at least {max(self.num_groups, self.group_size)} points "
                f"(point_num_groups={self.num_groups}, point_group_size={self.group_size}), "
                f"got shape {tuple(points.shape)}"
            )
        with torch.autocast(points.device.type, enabled=False):
            features = points.float()
            coords = features[..., self.sample_columns].contiguous()  # (N, P, 3)
            centre_indices = farthest_point_sample(coords, self.num_groups)  # (N, G)
            batch = torch.arange(points.shape[0], device=points.device)
            centres = coords[batch[:, None], centre_indices]  # (N, G, 3)
            neighbours = knn_indices(coords, centres, self.group_size)  # (N, G, k)
            groups = features[batch[:, None, None], neighbours]  # (N, G, k, F), raw features, not centred
            weight, bias = self.proj.weight.float(), self.proj.bias.float()
            tokens = F.conv2d(groups.permute(0, 3, 1, 2), weight, bias)  # (N, D, G, k)
            tokens = tokens.max(dim=-1).values  # (N, D, G); max, not amax: the gradient goes to one point, as there
        return tokens.transpose(1, 2).to(self.proj.weight.dtype)  # (N, G, D), in the order FPS picked the centres
