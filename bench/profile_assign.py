"""Where the time of target assignment goes: torch.profiler over rpnkit's
label_and_sample_anchors at batch 8 (R50-FPN anchors, 832x1344), CUDA kernels and CPU time.

    PYTHONPATH=src python bench/profile_assign.py
"""

import torch
from torch.profiler import ProfilerActivity, profile

from rpnkit.modeling.anchors import AnchorConfig
from rpnkit.modeling.rpn import RegionProposalNetwork, RPNConfig
from rpnkit.modeling.structures import GroundTruth


def main() -> None:
    device = torch.device("cuda")
    rpn = RegionProposalNetwork(in_channels=256, config=RPNConfig(anchors=AnchorConfig.pyramid()))
    rpn.to(device).train()
    fs = [(832 // s, 1344 // s) for s in (4, 8, 16, 32, 64)]
    anchors = rpn.anchor_generator(fs, device=device)
    g = torch.Generator().manual_seed(0)
    boxes = []
    for _ in range(8):
        n = int(torch.randint(3, 21, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 600
        boxes.append(torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 300 + 16], 1))
    gt = GroundTruth.from_lists(boxes).to(device)
    sizes = torch.tensor([[800, 1333]] * 8, device=device)
    for _ in range(10):
        rpn.label_and_sample_anchors(anchors, sizes, gt)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            rpn.label_and_sample_anchors(anchors, sizes, gt)
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=50)
    )
    print(
        prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=50)
    )


if __name__ == "__main__":
    main()
