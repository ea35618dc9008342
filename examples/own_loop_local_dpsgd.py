"""Your own training loop with example-level DP-SGD (Opacus) inside each client, aggregated
with SecAgg+: each client's examples are protected (python examples/own_loop_local_dpsgd.py)."""

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from securefl.api import Federation, FixedSize, LocalDPSGD, SecAggPlus

torch.manual_seed(0)
# 20 sites, 80 labelled examples each: a 2-class problem on 16 features
centres = torch.randn(2, 16)
sites = []
for _ in range(20):
    y = torch.randint(0, 2, (80,))
    sites.append(TensorDataset(centres[y] + torch.randn(80, 16), y))
test_y = torch.randint(0, 2, (400,))
test_x = centres[test_y] + torch.randn(400, 16)


def make_model():
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


class SiteTrainer:
    """Any local loop: securefl only asks that the loop use ctx.make_private's objects."""

    def train(self, state, data, ctx):
        model = make_model()
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        loader = DataLoader(data, batch_size=8)
        dp = ctx.make_private(model, opt, loader)  # per-example clipping + CSPRNG noise
        for _ in range(2):  # epochs: as declared in LocalDPSGD(epochs=2)
            for x, y in dp.data_loader:
                if len(y) == 0:  # an empty Poisson batch is still a (noise-only) step
                    dp.noise_only_step()
                    continue
                dp.optimizer.zero_grad()
                torch.nn.functional.cross_entropy(dp.module(x), y).backward()
                dp.optimizer.step()
        dp.module._close()
        return {k: v.detach() - state[k] for k, v in model.state_dict().items()}

    def evaluate(self, state):
        model = make_model()
        model.load_state_dict(state)
        with torch.no_grad():
            accuracy = (model(test_x).argmax(-1) == test_y).float().mean().item()
        return {"accuracy": accuracy}


fed = Federation(
    population=20,
    rounds=3,
    run_dir=sys.argv[1] if len(sys.argv) > 1 else "runs/local_dpsgd",
    aggregation=SecAggPlus(update_bound=5.0),  # |coordinate| the ring holds; larger: refused
    privacy=LocalDPSGD(max_grad_norm=1.0, epochs=2, batch_size=8, epsilon=3.0, delta=1e-4),
    sampling=FixedSize(10),
    client_sizes=[len(s) for s in sites],
)
initial = make_model().state_dict()
result = fed.run(SiteTrainer(), sites, initial)
print(f"example-level ε = {result.epsilon:.2f}, accuracy = {result.accuracy:.2f}")
