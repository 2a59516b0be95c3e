"""``movprune export``: write a finished run's model as a dense, compact or sparse folder."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from movprune.cli.common import err, out, quiet_libraries, reported_errors

_MB = 1e6


class ExportFormat(str, Enum):
    """The formats of ``movprune export``."""

    dense = "dense"
    compact = "compact"
    sparse = "sparse"
    onnx = "onnx"


class OnnxSource(str, Enum):
    """What ``--format onnx`` traces."""

    compact = "compact"
    dense = "dense"


def _ms(stats: dict | None, base: dict | None) -> tuple[str, str]:
    if not stats:
        return "-", "-"
    ratio = base["median_ms"] / stats["median_ms"] if base else None
    return f"{stats['median_ms']:.1f}", "-" if ratio is None else f"{ratio:.2f}x"


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (holds result.json and model/).")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write (created; replaced only with --force).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="dense: the model with zeros; compact: "
                                              "emptied heads/neurons removed; sparse: CSR matrices; onnx: "
                                              "an ONNX Runtime graph (of --onnx-source).")],
    int8: Annotated[bool, typer.Option("--int8", help="onnx: ONNX Runtime dynamic quantization (MatMul and "
                                       "embedding Gather weights int8); sparse: int8 values with a per-matrix "
                                       "scale; compact: int8 Linear and embedding weights, per-row scales (loaded by "
                                       "movprune's load_export, not transformers).")] = False,
    vocab: Annotated[str | None, typer.Option("--vocab", metavar="task|FILE",
                                              help="Keep only the tokens of the run's training data (task) or "
                                              "of FILE (one text per line), plus the special tokens: "
                                              "rewrites the tokenizer and the embedding rows.")] = None,
    evaluate: Annotated[bool, typer.Option("--eval", help="Evaluate the export in its own runtime on the "
                                           "run's evaluation split; recorded beside the run's metric.")] = False,
    eval_tolerance_pts: Annotated[float, typer.Option("--eval-tolerance-pts", help="With --eval: warn when the "
                                                      "export's metric is this many points below the "
                                                      "run's.")] = 0.5,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="With --eval or --vocab task: read the "
                                                  "task's data here instead of the run recipe's data_dir.")
                        ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --to folder.")] = False,
    onnx_source: Annotated[OnnxSource, typer.Option("--onnx-source", help="onnx only: trace the compact "
                                                    "model (emptied heads/neurons removed) or the dense one.")
                           ] = OnnxSource.compact,
    latency: Annotated[bool, typer.Option("--latency/--no-latency",
                                          help="Time the export against the dense model.")] = True,
    seq_length: Annotated[int, typer.Option("--seq-length", min=1,
                                            help="Tokens per sequence of the synthetic latency inputs.")] = 64,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed repetitions (the median is shown).")] = 5,
    threads: Annotated[int, typer.Option("--threads", min=0, help="torch threads for the kernel choice and "
                                         "the timing (0: torch's default).")] = 0,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", metavar="REPO_ID",
                                                    help="Upload the export (with its model card) to "
                                                    "this Hugging Face Hub model repository.")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repository "
                                          "as private.")] = False,
) -> None:
    """Export a run's pruned model: dense (with zeros), compact (emptied heads/neurons removed),
    sparse (CSR matrices, sparse kernels where measured faster) or onnx (an ONNX Runtime graph of
    the compact or dense model); prints size and latency vs the dense PyTorch model."""
    with reported_errors():
        quiet_libraries()
        fmt = fmt.value
        import torch

        if threads:
            torch.set_num_threads(threads)
        threads = torch.get_num_threads()
        from movprune.export import bench, export_run, folder_stats, load_export, load_hint

        err.print(f"[dim]exporting {escape(str(run_dir))} as {fmt}{' int8' if int8 else ''}"
                  f"{' with the vocabulary of ' + escape(vocab) if vocab else ''}"
                  f"{', then evaluating it' if evaluate else ''}…[/]")
        result = export_run(run_dir, to, fmt, int8=int8, force=force, onnx_source=onnx_source.value,
                            hub_repo=push_to_hub, vocab=vocab, evaluate=evaluate,
                            eval_tolerance_pts=eval_tolerance_pts, data_dir=data_dir)
        model_dir = Path(run_dir) / "model"
        name = f"{fmt}{'-int8' if int8 else ''}{'-vocab' if vocab else ''}"
        rows = {"dense": folder_stats(model_dir, result.encoder_prefix), name: folder_stats(to, result.encoder_prefix)}
        sizes = dict(zip(rows, (result.sizes["dense"], result.sizes["export"])))
        timing: dict[str, dict] = {name: {} for name in rows}
        if latency:
            err.print(f"[dim]timing batch 1 and 32 × {seq_length} tokens, {repeats} repetitions…[/]")
            models = dict(zip(rows, (load_export(model_dir), load_export(to, threads=threads))))
            # Ids every model knows (a pruned vocabulary is smaller): latency depends on shapes only.
            vocab_size = min(m.config.vocab_size for m in models.values())
            batches = {1: [bench.synthetic_batch(vocab_size, 1, seq_length)] * 10,
                       32: [bench.synthetic_batch(vocab_size, 32, seq_length)]}
            timing = bench.compare_latency(models, batches, repeats)

        base = timing["dense"]
        table = Table(title=f"{to}: {fmt}{' int8' if int8 else ''} export vs the run's dense model",
                      title_justify="left")
        for col in ("format", "embeddings MB", "encoder MB", "head MB", "other MB", "total MB", "× smaller",
                    "params", "b1 ms", "b1 ×", "b32 ms", "b32 ×"):
            table.add_column(col, justify="left" if col == "format" else "right")
        for row, stats in rows.items():
            b1 = _ms(timing[row].get("batch_1"), base.get("batch_1"))
            b32 = _ms(timing[row].get("batch_32"), base.get("batch_32"))
            part = sizes[row]
            table.add_row(row, *(f"{part[k] / _MB:.2f}" for k in ("embeddings", "encoder", "head", "other", "total")),
                          f"{sizes['dense']['total'] / part['total']:.1f}x", f"{stats.parameters / 1e6:.2f} M",
                          *b1, *b32)
        out.print(table)
        out.print("MB: 10^6 bytes on disk; other = configuration, tokenizer, model card, file headers and graph "
                  "structure, so the parts add up to the folder's files", highlight=False)
        if result.vocab:
            v = result.vocab
            out.print(f"vocabulary: kept {v['kept']:,} of {v['original_size']:,} tokens ({v['tokenizer']}) from "
                      f"{v['texts']:,} texts of {v['corpus']} at {v['max_length']} tokens "
                      f"({v['texts_kept_untruncated']} kept whole to keep their truncated tokens)", highlight=False)
        if result.evaluation:
            ev = result.evaluation
            for metric, value in ev["metrics"].items():
                if metric in ev["run_metrics"]:
                    out.print(f"{metric} of this export ({ev['runtime']}, {ev['examples']} examples): {value:.2f} "
                              f"(the run: {ev['run_metrics'][metric]:.2f}, change {0.0 - ev['drop_pts'][metric]:+.2f} "
                              "points)", highlight=False)
            if not ev["within_tolerance"]:
                worst = max(ev["drop_pts"].values())
                err.print(f"[bold yellow]warning:[/] the export's metric is {worst:.2f} points below the run's "
                          f"(more than --eval-tolerance-pts {ev['tolerance_pts']:g})", highlight=False)
        if latency:
            out.print(f"b1/b32: median ms per batch of 1/32 synthetic {seq_length}-token sequences over "
                      f"{repeats} interleaved repetitions, {threads} torch thread(s); × = dense ms / this ms",
                      highlight=False)
        if result.max_abs_diff is not None:
            out.print(f"max |output - dense output| on a check batch: {result.max_abs_diff:.2e}", highlight=False)
        d = result.details
        if fmt == "compact":
            out.print(f"removed {d['heads_removed']} attention heads and {d['neurons_removed']} FFN neurons; "
                      f"heads per layer {d['heads_per_layer']}, FFN sizes {d['intermediate_size_per_layer']}",
                      highlight=False)
            if int8:
                out.print(f"{d['int8_matrices']} Linear weight matrices and {d['int8_embeddings']} embedding "
                          "tables stored as int8 with one fp32 scale per row; load_export dequantizes them to "
                          "fp32 at load", highlight=False)
                c = d["int8_check"]
                out.print(f"max |int8 {c['output']} - fp32 compact {c['output']}| on the check batch: "
                          f"{c['max_abs_diff']:.2e}, {c['diff_pct_of_spread']:.1f}% of their spread "
                          f"(at most {c['tolerance_pct_of_spread']:g}%)", highlight=False)
        if fmt == "onnx":
            out.print(f"ONNX Runtime (CPU, {threads} intra-op thread(s)) on a graph of the {d['source']} model"
                      + (f"; heads per layer {d['heads_per_layer']}, FFN sizes {d['intermediate_size_per_layer']}"
                         if "heads_per_layer" in d else ""), highlight=False)
        if fmt == "sparse":
            chosen = sum(v > 0 for v in d["sparse_max_rows"].values())
            out.print(f"{d['matrices_csr']} of {d['matrices']} pruned matrices stored in CSR; the sparse "
                      f"kernel was measured faster for {chosen} of them at small batches", highlight=False)
        out.print("load it with:\n" + load_hint(fmt, result.architecture, to, int8), highlight=False, markup=False)
        out.print(f"model card: {Path(to) / 'README.md'}", highlight=False, markup=False)
        if push_to_hub:
            from movprune.export.hub import push_to_hub as push

            err.print(f"[dim]uploading {escape(str(to))} to the Hugging Face Hub as {escape(str(push_to_hub))}…[/]")
            out.print(f"uploaded: {push(to, push_to_hub, private=private)}", highlight=False, markup=False)
