"""THE great-circle distance of the project (one helper, imported everywhere distances are needed)."""

from __future__ import annotations

import numpy as np

__all__ = ["EARTH_RADIUS_M", "haversine_m"]

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), metres


def haversine_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres between (lat1, lon1) and (lat2, lon2), degrees; broadcasts.

    numpy in, numpy out (float64). torch tensors in, a float64 tensor out on their device, computed
    there: the training loss calls it every step, and a round trip through numpy would wait for the GPU.
    """
    if any(type(v).__module__.startswith("torch") for v in (lat1, lon1, lat2, lon2)):
        import torch

        dev = next(v.device for v in (lat1, lon1, lat2, lon2) if isinstance(v, torch.Tensor))
        lat1, lon1, lat2, lon2 = (torch.deg2rad(torch.as_tensor(v, dtype=torch.float64, device=dev))
                                  for v in (lat1, lon1, lat2, lon2))
        a = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
        return 2 * EARTH_RADIUS_M * torch.arcsin(torch.sqrt(a.clamp(0.0, 1.0)))
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
