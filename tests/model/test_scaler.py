import math

import torch

from moirai_moe_sk.model.scaler import packed_std_scaler


def _ids(*values):
    return torch.tensor([values])


def test_groups_by_sample_and_variate_with_bessel_correction():
    torch.manual_seed(0)
    target = torch.randn(1, 4, 16) * 5 + 3
    mask = torch.ones(1, 4, 16, dtype=torch.bool)
    loc, scale = packed_std_scaler(target, mask, _ids(1, 1, 1, 1), _ids(0, 0, 1, 1))
    for tokens in ((0, 1), (2, 3)):
        values = target[0, list(tokens)].double().flatten()
        assert torch.allclose(loc[0, list(tokens), 0], values.mean().float().expand(2))
        expected = math.sqrt(values.var(correction=1).item() + 1e-5)
        assert torch.allclose(
            scale[0, list(tokens), 0], torch.tensor(expected).expand(2)
        )
    assert loc.dtype == torch.float32


def test_masked_values_are_excluded():
    target = torch.zeros(1, 2, 16)
    target[0, 1] = 1e6  # e.g. prediction tokens or gaps
    mask = torch.zeros(1, 2, 16, dtype=torch.bool)
    mask[0, 0] = True
    target[0, 0] = torch.arange(16.0)
    loc, _ = packed_std_scaler(target, mask, _ids(1, 1), _ids(0, 0))
    assert torch.allclose(loc, torch.full((1, 2, 1), 7.5))


def test_edge_cases_match_the_reference_safe_division():
    target = torch.full((1, 3, 16), 4.0)
    mask = torch.zeros(1, 3, 16, dtype=torch.bool)
    mask[0, 1, 0] = True  # one observation in variate 1, none in variate 0
    loc, scale = packed_std_scaler(target, mask, _ids(1, 1, 0), _ids(0, 1, 2))
    tiny = math.sqrt(1e-5)
    assert loc[0, :, 0].tolist() == [0.0, 4.0, 0.0]
    assert torch.allclose(scale[0, :, 0], torch.tensor([tiny, tiny, 1.0]))


def test_statistics_are_float64_accurate_for_large_offsets():
    target = 1e7 + torch.arange(32.0).view(1, 2, 16)
    mask = torch.ones_like(target, dtype=torch.bool)
    loc, scale = packed_std_scaler(target, mask, _ids(1, 1), _ids(0, 0))
    assert loc[0, 0, 0] == torch.tensor(1e7 + 15.5, dtype=torch.float64).float()
    assert abs(scale[0, 0, 0].item() - torch.arange(32.0).std().item()) < 1e-4


def test_leading_dims_are_kept():
    target = torch.randn(2, 3, 5, 16)
    mask = torch.ones_like(target, dtype=torch.bool)
    ids = torch.ones(2, 3, 5, dtype=torch.long)
    loc, scale = packed_std_scaler(target, mask, ids, ids * 0)
    assert loc.shape == scale.shape == (2, 3, 5, 1)
