"""TransformerEncoderUNet: what is specific to seed 003 (token grid, parameter counts of both presets, pre-norm
layers, skips). Shapes, backward, TorchScript, ONNX and invalid arguments are in the shared network matrix."""

from __future__ import annotations

import torch

from lesionlab.networks.nets import TransformerEncoderUNet
from lesionlab.pipelines.complexity import count_parameters

C = 768


def test_paper_grid_is_nine_tokens_and_patch16_is_576():
    a = TransformerEncoderUNet(2, 3, 1, img_size=384, patch_size=128, num_layers=1, decoder_channels=(8, 8, 8, 8))
    b = TransformerEncoderUNet(2, 3, 1, img_size=384, patch_size=16, num_layers=1, decoder_channels=(8, 8, 8, 8))
    assert a.grid == [3, 3] and a.position_embedding.shape == (1, 9, C)
    assert b.grid == [24, 24] and b.position_embedding.shape == (1, 576, C)
    # the patch projection is a linear map of the flattened 3 x 128 x 128 patch (49,152 values, spec §3.1)
    assert a.patch_embedding.weight[0].numel() == 3 * 128 * 128


def test_parameter_counts_of_both_presets():
    a = count_parameters(TransformerEncoderUNet(2, 3, 1, img_size=384, patch_size=128))
    b = count_parameters(TransformerEncoderUNet(2, 3, 1, img_size=384, patch_size=16))
    assert a == 139_120_513 and b == 102_397_057
    # the presets differ only in the patch projection and the position embedding, computed by hand:
    projection = (3 * 128 * 128 * C + C) - (3 * 16 * 16 * C + C)
    positions = (9 - 576) * C
    assert a - b == projection + positions == 36_723_456


def test_default_skip_layers_and_layer_count():
    net = TransformerEncoderUNet(2, 3, 1, img_size=32, patch_size=8, hidden_size=16, mlp_dim=16, num_heads=2,
                                 num_layers=8, decoder_channels=(8, 8, 8, 8))
    assert net.skip_layers == [6, 4, 2, 0] and len(net.blocks) == 8


def test_transformer_layer_is_pre_norm():
    """Each layer computes Z' = Z + MSA(LN(Z)), Z'' = Z' + MLP(LN(Z')) (spec §3.2)."""
    torch.manual_seed(0)
    net = TransformerEncoderUNet(2, 3, 1, img_size=32, patch_size=8, hidden_size=16, mlp_dim=32, num_heads=2,
                                 num_layers=1, decoder_channels=(8, 8, 8, 8)).eval()
    block = net.blocks[0]
    z = torch.randn(2, 16, 16)
    z1 = z + block.attn(block.norm1(z))
    z2 = z1 + block.mlp(block.norm2(z1))
    torch.testing.assert_close(block(z), z2)


def test_output_restored_to_input_size_by_interpolation():
    net = TransformerEncoderUNet(2, 3, 1, img_size=96, patch_size=32, hidden_size=16, mlp_dim=16, num_heads=2,
                                 num_layers=2, decoder_channels=(8, 8, 8, 8)).eval()
    # 3 x 3 tokens, four x2 stages: 48 x 48, then x2 bilinear to 96 (x8 at the paper's 384)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 96, 96)).shape == (1, 1, 96, 96)
