"""Step 3: the AdamW optimizer, from scratch.

What it teaches: Adam's bias-corrected first and second moments (Kingma & Ba, Algorithm 1)
with decoupled weight decay (Loshchilov & Hutter, Algorithm 2), and AMSGrad.
Where: minibert/optim.py (adamw_update; AdamW also has a fused multi-tensor path).
Graded by: checks/test_optim.py (`pytest checks/ -m step03`): equal to torch.optim.AdamW.
Then trains the same small network with ours and with torch.optim.AdamW for 50 steps and
prints the largest parameter difference: expect 0 (the same floating-point operations in
the same order as torch.optim.AdamW).
"""

import sys

from _common import step_main


def demo(args, rest) -> int:
    import torch

    from minibert.optim import AdamW

    torch.manual_seed(0)
    x, y = torch.randn(64, 10), torch.randn(64, 1)
    nets = [torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [AdamW(nets[0].parameters(), lr=1e-2, weight_decay=0.01),
            torch.optim.AdamW(nets[1].parameters(), lr=1e-2, weight_decay=0.01)]
    for step in range(50):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(nets[0].parameters(), nets[1].parameters()))
    print(f"after 50 steps: loss {loss.item():.4f}; max |ours - torch.optim.AdamW| = {diff:.2e}")
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(step_main("step03", __doc__, demo=demo))
