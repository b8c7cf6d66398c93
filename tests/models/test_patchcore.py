"""PatchCore's pieces (models.patchcore): the encoder walk, feature shapes, nearest distances, the coreset."""

import pytest
import torch
from monai.networks.nets import UNet

from models.patchcore import encoder_blocks, greedy_coreset, local_features, nearest_distance


def small_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8, 16, 32), strides=(2, 2, 2),
                num_res_units=1).eval()  # fmt: skip


def test_encoder_blocks_are_the_down_path_the_full_forward_runs():
    unet = small_unet()
    blocks = encoder_blocks(unet)
    assert len(blocks) == 3  # one per stride; the bottom block is not a down block
    seen = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: seen.setdefault(k, o)) for k, b in enumerate(blocks)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        unet(x)
        h = x
        for k, b in enumerate(blocks):
            h = b(h)
            assert h.shape == seen[k].shape
            torch.testing.assert_close(h, seen[k])
    for hook in hooks:
        hook.remove()


def test_local_features_concatenate_levels_on_the_shallower_grid():
    unet = small_unet()
    with torch.no_grad():
        f = local_features(unet, torch.randn(2, 3, 32, 32), levels=(1, 2))
    assert f.shape == (2, 8 + 16, 8, 8)  # level 1 has stride 4, level 2 is upsampled to it
    with pytest.raises(ValueError, match="levels"):
        local_features(unet, torch.randn(1, 3, 32, 32), levels=(3,))


def test_nearest_distance_matches_brute_force_and_is_zero_on_the_bank():
    gen = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(50, 6, generator=gen), torch.randn(33, 6, generator=gen)
    brute = torch.stack([torch.linalg.vector_norm(bank - q, dim=1).min() for q in queries])
    torch.testing.assert_close(nearest_distance(queries, bank, chunk=7), brute, rtol=1e-5, atol=1e-5)
    assert nearest_distance(bank[:5], bank).abs().max() < 1e-3
    with pytest.raises(ValueError, match="bank"):
        nearest_distance(queries, torch.zeros(0, 6))


def test_greedy_coreset_picks_one_vector_in_each_separated_cluster():
    gen = torch.Generator().manual_seed(2)
    centres = torch.tensor([[0.0] * 4, [50.0] * 4, [-50.0, 50.0, -50.0, 50.0]])
    points = torch.cat([c + torch.randn(40, 4, generator=gen) for c in centres])  # (120, 4)
    picks = greedy_coreset(points, 3, seed=0)
    assert sorted((picks // 40).tolist()) == [0, 1, 2]
    assert torch.equal(greedy_coreset(points, 500), torch.arange(120))
    many = greedy_coreset(points, 60, seed=3)
    assert many.unique().numel() == 60
