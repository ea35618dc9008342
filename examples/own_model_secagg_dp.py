"""Your own torch model, federated with SecAgg+, client-level DP, a budget policy, a signed
ledger and an audit report (python examples/own_model_secagg_dp.py [RUN_DIR])."""

import sys
from pathlib import Path

import torch

from securefl.api import CentralDP, Federation, Poisson, SecAggPlus

torch.manual_seed(0)
data = [(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(20, 1)) for x in torch.randn(50, 20, 8)]
model = torch.nn.Linear(8, 1)


def local_update(state, x, y):  # any local training loop: here 5 steps of SGD
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return {k: v.detach() - state[k] for k, v in model.state_dict().items()}


fed = Federation(
    population=50,
    rounds=5,
    run_dir=sys.argv[1] if len(sys.argv) > 1 else "runs/own_model",
    aggregation=SecAggPlus(),
    privacy=CentralDP(clip=0.5, epsilon=8.0),
    sampling=Poisson(0.5),
    policy=Path(__file__).parents[1] / "audits/policies/client_level_secagg.toml",
)
state = {k: v.clone() for k, v in model.state_dict().items()}
for rnd in fed.rounds(state):
    for client in rnd.cohort:
        rnd.submit(client, local_update(rnd.state, *data[client]))
    state = rnd.finish()
print(f"ε = {fed.result.epsilon:.2f} at δ = 1e-5; report: {fed.result.report_paths['html']}")
