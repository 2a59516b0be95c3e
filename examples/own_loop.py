"""Fine-prune a BERT-family model on GLUE SST-2 in a plain PyTorch loop with movprune's library API.

python examples/own_loop.py --model tiny-random-bert --data-dir DIR --method movement \
    --remaining-pct 10 --max-steps 300 --output-dir OUT     # DIR holds SST-2/train.tsv and dev.tsv
"""

import argparse

import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, get_linear_schedule_with_warmup

import movprune
from movprune.models import resolve_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="tiny-random-bert", help="a Hub id, a local folder or a movprune alias")
parser.add_argument("--data-dir", required=True, help="GLUE in its original layout (SST-2/train.tsv, dev.tsv)")
parser.add_argument("--method", default="movement")
parser.add_argument("--remaining-pct", type=float, default=10.0)
parser.add_argument("--max-steps", type=int, default=300)
parser.add_argument("--output-dir", required=True, help="the run folder to write (movprune inspect/export read it)")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=3e-5)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()

torch.manual_seed(args.seed)
device = "cuda" if torch.cuda.is_available() else "cpu"
resolved = resolve_model(args.model)
tokenizer = resolved.tokenizer()
model = resolved.instantiate(AutoModelForSequenceClassification, num_labels=2).to(device)
files = {split: f"{args.data_dir}/SST-2/{split}.tsv" for split in ("train", "dev")}
sst2 = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)  # quoting=3: no quote characters
sst2 = sst2.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True,
                remove_columns=["sentence"])
collate = DataCollatorWithPadding(tokenizer)
train = DataLoader(sst2["train"], batch_size=args.batch_size, shuffle=True, collate_fn=collate)

# The pruner: the same `pruner:` block a movprune recipe takes.
session = movprune.attach(model, {"method": args.method, "remaining_pct": args.remaining_pct}, args.max_steps)
optimizer = torch.optim.AdamW(session.optimizer_groups(weight_decay=0.0), lr=args.lr)  # weights + scores
scheduler = get_linear_schedule_with_warmup(optimizer, args.max_steps // 10, args.max_steps)
model.train()
step = 0
while step < args.max_steps:
    for batch in train:
        if step == args.max_steps:
            break
        batch = batch.to(device)
        session.before_forward(step)  # the schedule: this step's masks
        loss = session.loss(model(**batch).loss)  # + the method's penalty (soft movement, L0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        session.after_optimizer_step()  # e.g. the lambda controller
        step += 1

session.bake()  # the final masks, multiplied into the weights
model.eval()
correct = 0
with torch.no_grad():
    for batch in DataLoader(sst2["dev"], batch_size=64, collate_fn=collate):
        batch = batch.to(device)
        correct += int((model(**batch).logits.argmax(-1) == batch["labels"]).sum())
accuracy = 100.0 * correct / len(sst2["dev"])
result = session.save(args.output_dir, tokenizer, task="sst2", metrics={"accuracy": accuracy}, seed=args.seed,
                      model_name=args.model, train_settings={"lr": args.lr, "batch_size": args.batch_size})
print(f"{args.output_dir}: accuracy {accuracy:.2f}%, {result.remaining_pct:.2f}% of encoder weights remain")
