"""Fine-prune a BERT-family model on GLUE SST-2 with the Hugging Face Trainer and movprune's PruningTrainer.

python examples/hf_trainer.py --model tiny-random-bert --data-dir DIR --method movement \
    --remaining-pct 10 --max-steps 300 --output-dir OUT     # DIR holds SST-2/train.tsv and dev.tsv
Also under `torchrun --nproc_per_node N examples/hf_trainer.py ...` or `accelerate launch`. The
Trainer's checkpoints go to OUT-checkpoints; --resume continues from the newest one.
"""

import argparse

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

import movprune
from movprune.models import resolve_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="tiny-random-bert", help="a Hub id, a local folder or a movprune alias")
parser.add_argument("--data-dir", required=True, help="GLUE in its original layout (SST-2/train.tsv, dev.tsv)")
parser.add_argument("--method", default="movement")
parser.add_argument("--remaining-pct", type=float, default=10.0)
parser.add_argument("--max-steps", type=int, default=300)
parser.add_argument("--output-dir", required=True, help="the run folder to write (movprune inspect/export read it)")
parser.add_argument("--batch-size", type=int, default=32, help="per process")
parser.add_argument("--lr", type=float, default=3e-5)
parser.add_argument("--save-steps", type=int, default=100)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
args = parser.parse_args()

resolved = resolve_model(args.model)
tokenizer = resolved.tokenizer()
model = resolved.instantiate(AutoModelForSequenceClassification, num_labels=2)
files = {split: f"{args.data_dir}/SST-2/{split}.tsv" for split in ("train", "dev")}
sst2 = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)  # quoting=3: no quote characters
sst2 = sst2.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True,
                remove_columns=["sentence"])


def accuracy(prediction):
    """The dev accuracy in %, as movprune reports metrics."""
    return {"accuracy": 100.0 * float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))}


training_args = TrainingArguments(
    output_dir=f"{args.output_dir}-checkpoints", max_steps=args.max_steps, learning_rate=args.lr,
    per_device_train_batch_size=args.batch_size, warmup_steps=args.max_steps // 10, save_steps=args.save_steps,
    logging_steps=max(1, args.max_steps // 10), seed=args.seed, report_to=[],
    use_cpu=not torch.cuda.is_available())  # without a GPU, torchrun's processes then train together (gloo)
trainer = movprune.PruningTrainer(
    model=model, args=training_args, train_dataset=sst2["train"], eval_dataset=sst2["dev"],
    data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy,
    pruning={"method": args.method, "remaining_pct": args.remaining_pct})  # a recipe's `pruner:` block
trainer.train(resume_from_checkpoint=True if args.resume else None)
trainer.pruning.bake()  # the final masks, multiplied into the weights, before the evaluation
metrics = trainer.evaluate()
result = trainer.pruning.save(args.output_dir, tokenizer, task="sst2", metrics={"accuracy": metrics["eval_accuracy"]},
                              seed=args.seed, model_name=args.model,
                              train_settings={"lr": args.lr, "batch_size": args.batch_size * training_args.world_size})
if trainer.is_world_process_zero():
    print(f"{args.output_dir}: accuracy {metrics['eval_accuracy']:.2f}%, {result.remaining_pct:.2f}% of encoder "
          "weights remain")
