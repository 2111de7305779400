"""RoIAlign over pyramid levels on one canvas (``pooling.pool_on_canvas``): the same pooled
features and gradients as torchvision's MultiScaleRoIAlign and rpnkit's level-by-level loop,
hand-checked values at the edges, bfloat16 under autocast, and a trace with no graph break.

Tolerances: RoIs on level 0 are not moved, and pool exactly as on the level, except where their
samples reach the level's last row or column: there torchvision takes the edge pixel with weight
1 and the canvas interpolates between the edge and its copy, which can round differently (1
ulp). RoIs on other levels are moved after scaling, and float32 rounds the moved coordinates at
the canvas' magnitude (half an ulp: 2^-18 pixel below 128), shifting each sample by a few 1e-6
of a pixel; on unit-normal features (neighbours differ by up to ~6) a pooled value moves by a
few 1e-5: 2.0e-5 at most over 40 seeds, atol 5e-5. A gradient sums many samples' shifts: 4.4e-5
at most, atol 1e-4.
"""

import math
from collections import OrderedDict

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torchvision.ops import MultiScaleRoIAlign, roi_align

from rpnkit.modeling.pooling import canvas_layout, pool_on_canvas, pool_sorted_by_level
from rpnkit.modeling.roi_heads import MultiLevelRoIPooler, RoIHeadConfig

STRIDES, CH, SIZE = (4, 8, 16, 32), 11, 7
# boxes of 32 pixels go to level 2 (stride 16) rather than of 224: small images use every level
CANONICAL = 32
# (padded (H, W), the images' (H, W)): the first fills its padded size in one direction each,
# so RoIs touch the feature maps' last rows and columns; the second is no multiple of 32, so
# the maps reach past the images
CASES = [((96, 192), [(96, 130), (77, 192)]), ((100, 170), [(100, 130), (64, 170)])]


def pyramid(padded, generator, dtype=torch.float32):
    """[(2, CH, ceil(H / s), ceil(W / s))] for the four strides."""
    h, w = padded
    shapes = [(2, CH, math.ceil(h / s), math.ceil(w / s)) for s in STRIDES]
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]


def boxes_in(image, generator, n=40):
    """(n + 8, 4) xyxy inside the image: random ones of every scale, ones ending at its right
    and bottom edges, tiny ones (under a level-0 pixel) and the whole image."""
    h, w = image
    size = torch.tensor([w, h], dtype=torch.float32)
    wh = size * torch.exp(torch.empty(n, 2).uniform_(math.log(0.02), 0, generator=generator))
    xy = (size - wh) * torch.rand(n, 2, generator=generator)
    edge_wh = size * torch.tensor([[0.1, 0.3], [0.5, 0.2], [0.9, 0.9], [0.05, 0.6]])
    edge = torch.cat([size - edge_wh, size.expand(4, 2)], dim=1)
    # tiny ones, widened by roi_align to one pixel: kept a level-0 pixel from the map's end
    tiny_xy = torch.tensor([[3.3, 5.1], [w - 9.0, h - 9.0]])
    tiny = torch.cat([tiny_xy, tiny_xy + torch.tensor([[0.4, 1.7], [2.5, 0.3]])], dim=1)
    whole = torch.tensor([[0.0, 0.0, w, h]])
    return torch.cat([torch.cat([xy, xy + wh], dim=1), edge, tiny, whole])


def overshoot(rois, levels, features):
    """(N,) how far past its level's map each RoI reaches, in level pixels (roi_align widens a
    RoI under a pixel to one): above -1, it samples the last row or column."""
    scale = torch.tensor([1.0 / s for s in STRIDES])[levels]
    x1, y1, x2, y2 = (rois[:, 1:] * scale[:, None]).unbind(1)
    height = torch.tensor([f.shape[2] for f in features], dtype=torch.float32)[levels]
    width = torch.tensor([f.shape[3] for f in features], dtype=torch.float32)[levels]
    return torch.maximum(torch.maximum(x2, x1 + 1) - width, torch.maximum(y2, y1 + 1) - height)


def case(padded, images, seed=0):
    """Features, [(R_i, 4)] boxes per image, and the pooler's (N, 5) RoIs and (N,) levels."""
    g = torch.Generator().manual_seed(seed)
    features = pyramid(padded, g)
    boxes = torch.stack([boxes_in(image, g) for image in images])
    config = RoIHeadConfig(canonical_scale=CANONICAL)
    pooler = MultiLevelRoIPooler(strides=STRIDES, config=config)
    flat = boxes.reshape(-1, 4)
    index = torch.arange(2).repeat_interleave(boxes.shape[1]).float()
    rois, levels = torch.cat([index[:, None], flat], dim=1), pooler.levels(flat)
    # thin random boxes at an edge can reach past their map once widened, where the canvas
    # reads otherwise (test_a_tiny_roi_past_the_map...): those are left out, all but a few
    inside = overshoot(rois, levels, features) <= 0
    assert inside.float().mean() > 0.9
    rois, levels = rois[inside], levels[inside]
    boxes = boxes.reshape(-1, 4)[inside]  # as a list per image, for torchvision's pooler
    per_image = [boxes[rois[:, 0] == i] for i in range(2)]
    return features, per_image, rois, levels


def level_loop(features, rois, levels, sampling_ratio):
    def pool(feature, level_rois, stride):
        scale = 1.0 / stride
        return roi_align(feature, level_rois, SIZE, scale, sampling_ratio=sampling_ratio)

    return pool_sorted_by_level(features, STRIDES, rois, levels, pool)


@pytest.mark.parametrize("sampling_ratio", [2, 1])  # fixed ratios: see the dispatch test
@pytest.mark.parametrize(("padded", "images"), CASES)
def test_equals_torchvision_and_the_level_loop(padded, images, sampling_ratio):
    features, boxes, rois, levels = case(padded, images)
    assert levels.bincount(minlength=4).min() > 0  # every level pooled
    got = pool_on_canvas(features, STRIDES, rois, levels, size=SIZE, sampling_ratio=sampling_ratio)
    loop = level_loop(features, rois, levels, sampling_ratio)
    tv = MultiScaleRoIAlign(["0", "1", "2", "3"], SIZE, sampling_ratio, canonical_scale=CANONICAL)
    named = OrderedDict((str(i), f) for i, f in enumerate(features))
    want = tv(named, boxes, [tuple(images[0]), tuple(images[1])])
    # torchvision infers the levels' scales from the largest image: the same strides here
    assert tv.scales == [1.0 / s for s in STRIDES]
    assert torch.equal(loop, want)
    edge = overshoot(rois, levels, features) > -1
    assert edge[levels == 0].any() and edge[levels > 0].any()  # the edge cases are there
    exact = (levels == 0) & ~edge
    assert torch.equal(got[exact], want[exact])
    level0 = levels == 0
    torch.testing.assert_close(got[level0], want[level0], rtol=0, atol=1e-6)  # ulps at the edge
    torch.testing.assert_close(got, want, rtol=0, atol=5e-5)


@pytest.mark.parametrize("sampling_ratio", [2, 1])  # fixed ratios: see the dispatch test
@pytest.mark.parametrize(("padded", "images"), CASES)
def test_gradients_equal_the_level_loops(padded, images, sampling_ratio):
    features, _, rois, levels = case(padded, images, seed=1)
    weight = torch.randn(rois.shape[0], CH, SIZE, SIZE, generator=torch.Generator().manual_seed(2))

    def canvas(features):
        return pool_on_canvas(
            features, STRIDES, rois, levels, size=SIZE, sampling_ratio=sampling_ratio
        )

    grads = []
    for pool in (canvas, lambda features: level_loop(features, rois, levels, sampling_ratio)):
        leaves = [f.clone().requires_grad_() for f in features]
        (pool(leaves) * weight).sum().backward()
        grads.append([f.grad for f in leaves])
    for got, want in zip(*grads):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_constant_levels_pool_to_their_own_value():
    """Level l filled with l + 1: every RoI pools to its level's value, whatever its place,
    edges included (no other level's values reach it)."""
    features, _, rois, levels = case(*CASES[0])
    constant = [torch.full_like(f, float(i + 1)) for i, f in enumerate(features)]
    got = pool_on_canvas(constant, STRIDES, rois, levels, size=SIZE, sampling_ratio=2)
    want = (levels + 1).float()[:, None, None, None].expand_as(got)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_ramps_read_the_edge_pixel_past_the_last_centre():
    """Level 0 (8 x 8, stride 4) holds its column index, level 1 (4 x 4, stride 8) its row
    index. One bin, 2 x 2 samples. Past the last pixel's index roi_align reads the last pixel
    (value 7, not 7.25 or 7.75 as the ramp would go on); inside, it interpolates."""
    ramp0 = torch.arange(8.0).expand(1, 1, 8, 8)  # value = x
    ramp1 = torch.arange(4.0)[:, None].expand(1, 1, 4, 4)  # value = y
    features = [ramp0, ramp1, torch.zeros(1, 1, 2, 2)]
    rois = torch.tensor(
        [
            [0, 28.0, 0, 32, 4],  # level 0, x 7..8: samples 7.25, 7.75 -> both read 7
            [0, 20.0, 0, 28, 4],  # level 0, x 5..7: samples 5.5, 6.5 -> 6
            [0, 0.0, 16, 8, 32],  # level 1, y 2..4: samples 2.5 -> 2.5, 3.5 -> 3: mean 2.75
        ]
    )
    levels = torch.tensor([0, 0, 1])
    got = pool_on_canvas(features, (4, 8, 16), rois, levels, size=1, sampling_ratio=2)
    assert got.flatten().tolist() == [7.0, 6.0, 2.75]
    want = [
        roi_align(f, rois[i : i + 1], 1, 1.0 / s, 2)
        for i, f, s in ((0, ramp0, 4), (1, ramp0, 4), (2, ramp1, 8))
    ]
    assert torch.cat(want).flatten().tolist() == [7.0, 6.0, 2.75]


def test_a_tiny_roi_past_the_map_blends_the_frame_with_zeros():
    """The documented difference: a RoI under a pixel at level 0's last column is widened to
    one pixel, so one sample column falls past the map (x 8.25 of 8). torchvision reads 0
    there; the canvas interpolates between the frame (1) and the zero gap: 0.75. The next
    level (value 2) is not read."""
    features = [torch.ones(1, 1, 8, 8), torch.full((1, 1, 4, 4), 2.0)]
    rois = torch.tensor([[0, 30.0, 10, 31, 12]])  # x 7.5..8.5, y 2.5..3.5 once widened
    got = pool_on_canvas(features, (4, 8), rois, torch.tensor([0]), size=1, sampling_ratio=2)
    assert got.item() == (1 + 0.75) / 2
    assert roi_align(features[0], rois, 1, 0.25, 2).item() == (1 + 0) / 2


def test_bfloat16_under_autocast_pools_in_float32():
    """bfloat16 features under autocast give float32's result to bfloat16 precision, in
    bfloat16 (on the CPU the pooler itself loops over levels, so the canvas is called here)."""
    features, _, rois, levels = case(*CASES[1])

    def pool(levels_features):
        return pool_on_canvas(levels_features, STRIDES, rois, levels, size=SIZE, sampling_ratio=2)

    want = pool(features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pool([f.bfloat16() for f in features])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=1.6e-2, atol=1e-2)
    # the canvas holds the bfloat16 values in float32: only the result is rounded
    exact = pool([f.bfloat16().float() for f in features])
    assert torch.equal(got, exact.bfloat16())


@pytest.mark.parametrize(
    ("pooler", "sampling_ratio", "on_cuda"),
    [("align", 2, "canvas"), ("align", 0, "loop"), ("pool", 2, "loop")],
)
def test_the_pooler_takes_the_canvas_on_cuda_only(monkeypatch, pooler, sampling_ratio, on_cuda):
    """MultiLevelRoIPooler: the level loop on the CPU (no sync to save); on CUDA the canvas for
    RoIAlign at a fixed sampling ratio, the loop for RoIPool and for the adaptive ratio (0:
    moving a RoI can change its float32 width, and so its number of samples). Checked by which
    function it calls, with CPU tensors posing as CUDA ones."""
    import rpnkit.modeling.roi_heads as roi_heads

    calls = []
    monkeypatch.setattr(roi_heads, "pool_on_canvas", lambda *a, **k: calls.append("canvas"))
    monkeypatch.setattr(roi_heads, "pool_sorted_by_level", lambda *a, **k: calls.append("loop"))
    features, per_image, _, _ = case(*CASES[1])
    boxes = torch.stack([b[:4] for b in per_image])
    config = RoIHeadConfig(canonical_scale=CANONICAL, pooler=pooler, sampling_ratio=sampling_ratio)
    pooler = MultiLevelRoIPooler(strides=STRIDES, config=config)
    pooler(features, boxes)

    class OnCuda(torch.Tensor):
        is_cuda = True

    pooler([f.as_subclass(OnCuda) for f in features], boxes)
    assert calls == ["loop", on_cuda]


def test_the_layout_frames_each_level_apart():
    """Level 0 at the origin with its copy row and column; the others framed in a second
    column, a zero row or column between any two."""
    origins, size = canvas_layout([(4, 4), (2, 2), (1, 1)])
    assert origins == [(0, 0), (1, 7), (6, 7)]
    assert size == (9, 11)


def test_traces_as_one_graph_with_dynamic_shapes():
    """torch.compile: no graph break (fullgraph), sizes dynamic, the forward and backward
    equal to eager mode's, and one graph for both cases' sizes."""

    def pool(features, rois, levels):  # the settings constants, as the pooler's config is
        return pool_on_canvas(features, STRIDES, rois, levels, size=SIZE, sampling_ratio=2)

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(pool, backend=counter, fullgraph=True, dynamic=True)
    # no duck sizing: two sizes equal by chance in the first case would be assumed equal
    with torch.fx.experimental._config.patch(use_duck_shape=False):
        for padded, images in CASES:
            features, _, rois, levels = case(padded, images)
            outputs = []
            for fn in (pool, compiled):
                leaves = [f.clone().requires_grad_() for f in features]
                pooled = fn(leaves, rois, levels)
                pooled.square().sum().backward()
                outputs.append([pooled, *(f.grad for f in leaves)])
            for got, want in zip(*outputs):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert counter.frame_count == 1
