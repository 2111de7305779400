import torch

from rpnkit.model import normalize


def test_normalize_zeroes_the_padding_of_each_image():
    # two images of 2x3 and 3x2 true size in a 3x3 batch: (x - mean) / std inside, 0 outside,
    # as torchvision pads after normalising
    images = torch.full((2, 3, 3, 3), 0.5)
    sizes = torch.tensor([[2, 3], [3, 2]])
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    out = normalize(images, sizes, mean, std)
    expected = ((0.5 - mean) / std).view(3)
    assert torch.allclose(out[0, :, :2, :3], expected.view(3, 1, 1).expand(3, 2, 3))
    assert (out[0, :, 2, :] == 0).all()
    assert torch.allclose(out[1, :, :, :2], expected.view(3, 1, 1).expand(3, 3, 2))
    assert (out[1, :, :, 2] == 0).all()
