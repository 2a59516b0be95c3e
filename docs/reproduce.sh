#!/usr/bin/env bash
# The CPU-scale reproduction behind docs/REPRODUCTION.md: every run and every table and figure.
#
#   bash docs/reproduce.sh            # both lanes side by side (one CPU thread each), then the report
#   bash docs/reproduce.sh a          # lane a only: dense, magnitude, movement (+ their distilled runs)
#   bash docs/reproduce.sh b          # lane b only: soft movement, L0 (+ their distilled runs)
#   bash docs/reproduce.sh report     # tables and plots from whatever runs have finished
#   bash docs/reproduce.sh budget     # movement at 10% with 3000 steps (the budget check, ~25 min)
#   bash docs/reproduce.sh bf16       # dense and magnitude-10% SST-2 runs in fp32 (does bf16 hold?)
#   bash docs/reproduce.sh remedies   # the collapse remedies (SST-2, and the shipped one on MRPC), 3 seeds,
#                                     # then their tables (REMEDY_SEEDS, default 42,43,44; REMEDY_OUT);
#                                     # remedies-sst2 / remedies-mrpc / remedies-report run one part
#   bash docs/reproduce.sh speed      # hybrid vs unstructured on SST-2, every export timed, the frontier
#                                     # plot (SPEED_OUT); speed-runs / speed-report run one part
#   bash docs/reproduce.sh budget-study  # which method at which budget: SST-2 at 10% (and hybrid 50%) with
#                                     # 300, 1000 and 3000 steps, every method, then its tables and figures
#                                     # (BUDGET_OUT); budget-study-runs / budget-study-report run one part
#   bash docs/reproduce.sh fisher     # one-shot Fisher pruning (no training) from the dense SST-2 and MRPC
#                                     # runs (FISHER_SST2, FISHER_MRPC: their run folders), a 300-step
#                                     # distilled recovery, the exports timed (FISHER_OUT);
#                                     # fisher-runs / fisher-report run one part
#
# TASKS (default "sst2 mrpc squad") picks the tasks; SEEDS the seeds of the plain sweeps (default:
# 42,43 for SST-2 and MRPC, 42 for SQuAD, as in docs/REPRODUCTION.md), e.g.
# `TASKS=squad SEEDS=42,43 bash docs/reproduce.sh` adds a second seed to SQuAD (finished runs are
# skipped). The distilled sweeps always use seed 42 and its dense run as the teacher.
#
# Run it from the repository root after `make install`. Sweeps resume: rerunning skips finished
# runs, so an interrupted reproduction continues where it stopped. Lane b's distilled runs need
# lane a's dense run of the same task (the teacher): run lane a first, or both together (lane a
# starts with the dense runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
MOVPRUNE=${MOVPRUNE:-.venv/bin/movprune}
TASKS=${TASKS:-"sst2 mrpc squad"}
seeds_for() {  # the plain sweeps' seeds: SST-2 and MRPC are cheap enough for two, SQuAD is not
    if [ -n "${SEEDS:-}" ]; then echo "$SEEDS"; elif [ "$1" = squad ]; then echo 42; else echo 42,43; fi
}
LEVELS=70,30,10,3
DISTILL_LEVELS=10,3
# Soft movement's scores start at -1.5 instead of the paper's 0: from 0, at the paper's scores_lr,
# they cannot reach the cut logit(0.1) = -2.2 in a few hundred steps (README, "Pruning methods").
SOFT="pruner.scores_init=-1.5"

sweep() {  # sweep TASK METHODS LEVELS SEEDS [overrides...]
    local task=$1 methods=$2 levels=$3 seeds=$4
    shift 4
    "$MOVPRUNE" sweep "src/movprune/recipes/repro/$task.yaml" --pruners "$methods" --remaining "$levels" \
        --seeds "$seeds" "$@"
}

teacher() { echo "distill.teacher=results/repro-$1/none-r100-s42"; }

wait_for_teacher() {  # lane b's distilled runs start once lane a's dense run has finished
    until [ -f "results/repro-$1/none-r100-s42/result.json" ]; do sleep 30; done
}

lane_a() {
    for task in $TASKS; do
        sweep "$task" none,magnitude,movement "$LEVELS" "$(seeds_for "$task")"
        sweep "$task" magnitude,movement "$DISTILL_LEVELS" 42 "name=repro-$task-distill" "$(teacher "$task")"
    done
}

lane_b() {
    for task in $TASKS; do
        sweep "$task" soft_movement "$LEVELS" "$(seeds_for "$task")" "$SOFT"
        sweep "$task" l0 "$LEVELS" "$(seeds_for "$task")"
        wait_for_teacher "$task"
        sweep "$task" soft_movement "$DISTILL_LEVELS" 42 "name=repro-$task-distill" "$(teacher "$task")" "$SOFT"
        sweep "$task" l0 "$DISTILL_LEVELS" 42 "name=repro-$task-distill" "$(teacher "$task")"
    done
}

report() {
    mkdir -p docs/repro
    for task in $TASKS; do
        for kind in "" "-distill"; do
            dir="results/repro-$task$kind"
            [ -d "$dir" ] || continue
            paper=()
            [ "$task" = squad ] && paper=(--paper)
            "$MOVPRUNE" compare "$dir" --format markdown "${paper[@]}" --plot "docs/repro/$task$kind.png" \
                > "docs/repro/$task$kind.md"
            "$MOVPRUNE" compare "$dir" --format csv > "docs/repro/$task$kind.csv"
        done
    done
}

budget() {  # is it the budget? movement at 10% with ten times the sweep's steps (300 dense)
    "$MOVPRUNE" run src/movprune/recipes/quickstart.yaml pruner.method=movement train.max_steps=3000 \
        train.eval_every_steps=250 train.max_eval_samples=300 output_dir=results/repro-budget \
        name=sst2-movement-r10-3000steps
}

bf16() {  # the sweep trains under bf16 autocast: the same dense and 10% magnitude runs in fp32
    "$MOVPRUNE" run src/movprune/recipes/repro/sst2.yaml pruner.method=none pruner.remaining_pct=null \
        train.bf16=false output_dir=results/repro-fp32 name=sst2-none-fp32
    "$MOVPRUNE" run src/movprune/recipes/repro/sst2.yaml pruner.method=magnitude pruner.remaining_pct=10 \
        train.bf16=false output_dir=results/repro-fp32 name=sst2-magnitude-r10-fp32
}

remedies_sst2() {  # hard movement's collapse on SST-2: each remedy (docs/methods.md#remedies-for-the-collapse)
    local out=${REMEDY_OUT:-results} seeds=${REMEDY_SEEDS:-42,43,44}
    sweep_r() { "$MOVPRUNE" sweep src/movprune/recipes/repro/sst2.yaml --seeds "$seeds" "output_dir=$out" "$@"; }
    sweep_r --pruners sensitivity --remaining 10,3 name=remedy-sensitivity
    sweep_r --pruners magnitude --remaining 10,3 name=remedy-magnitude  # the bar: the same seeds
    sweep_r --pruners movement --remaining 10,3 name=remedy-maginit pruner.scores_init_from=magnitude
    sweep_r --pruners sensitivity --remaining 70,30 name=remedy-sensitivity
    "$MOVPRUNE" sweep src/movprune/recipes/repro/sst2.yaml --pruners movement --remaining 10,3 --seeds 42 \
        "output_dir=$out" name=remedy-bias pruner.bias_correction=true
}

remedies_mrpc() {  # the shipped remedy on MRPC, every level and seed
    local out=${REMEDY_OUT:-results} seeds=${REMEDY_SEEDS:-42,43,44}
    "$MOVPRUNE" sweep src/movprune/recipes/repro/mrpc.yaml --pruners sensitivity --remaining 70,30,10,3 \
        --seeds "$seeds" "output_dir=$out" name=remedy-mrpc-sensitivity
}

remedies_report() {
    local out=${REMEDY_OUT:-results}
    # magnitude's own runs stay out of the table: its seeds 42 and 43 are the reproduction's (repro-sst2)
    local dirs=("$out"/remedy-sensitivity "$out"/remedy-maginit)
    [ -d "$out"/remedy-bias ] && dirs+=("$out"/remedy-bias)
    "$MOVPRUNE" compare "${dirs[@]}" --format markdown --plot docs/repro/sst2-remedies.png > docs/repro/sst2-remedies.md
    "$MOVPRUNE" compare "${dirs[@]}" --format csv > docs/repro/sst2-remedies.csv
    "$MOVPRUNE" compare "$out"/remedy-mrpc-sensitivity --format markdown > docs/repro/mrpc-remedies.md
    "$MOVPRUNE" compare "$out"/remedy-mrpc-sensitivity --format csv > docs/repro/mrpc-remedies.csv
}

remedies_probe() {  # each remedy's loss after removing 2% and 20% of the weights by lowest score
    .venv/bin/python benchmarks/movement_probe.py --dense-steps 40 --fractions 0.02,0.2 \
        --out docs/repro/movement_probe_remedies.json
}

speed() {  # the frontier: hybrid vs unstructured pruning, accuracy against measured speed-up
    local out=${SPEED_OUT:-results}
    sweep_s() { "$MOVPRUNE" sweep src/movprune/recipes/repro/sst2.yaml --seeds 42 "output_dir=$out" "$@"; }
    sweep_s --pruners none name=frontier-hybrid
    sweep_s --pruners soft_movement,magnitude --remaining 50,25,15 name=frontier-hybrid pruner.pattern=hybrid "$SOFT"
    sweep_s --pruners soft_movement --remaining 30,10,3 name=frontier-unstructured "$SOFT"
}

speed_report() {  # times every export against dense (quiet machine: it runs alone), then the plot
    local out=${SPEED_OUT:-results}
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_speed.py "$out"/frontier-hybrid \
        "$out"/frontier-unstructured --sparse --out docs/repro/frontier-speed.json > /dev/null
    "$MOVPRUNE" compare "$out"/frontier-hybrid "$out"/frontier-unstructured --speed docs/repro/frontier-speed.json \
        --plot-speed docs/repro/frontier-speed.png --format markdown > docs/repro/frontier-speed.md
}

BUDGETS=${BUDGETS:-"300 1000 3000"}
budget_seeds() {  # BUDGET_SEEDS, else 42,43 (3000 steps: 42 alone, ten times the cost)
    if [ -n "${BUDGET_SEEDS:-}" ]; then echo "$BUDGET_SEEDS"; elif [ "$1" = 3000 ]; then echo 42; else echo 42,43; fi
}

budget_study() {  # every method at 10% remaining (and hybrid 50%) on SST-2, at each training budget
    # One sweep folder per budget and override set (runs are named by method, level and seed only):
    # steps-N holds dense, magnitude, movement, L0 and sensitivity, steps-N-soft soft movement,
    # steps-N-maginit movement with scores from |W|, steps-N-hybrid the hybrid (heads and neurons)
    # runs, steps-N-fisher the one-shot Fisher runs pruned from steps-N's dense run. The schedule's
    # warm-ups are fractions of train.max_steps, so every budget keeps the repro recipe's shape.
    # Two lanes side by side, one CPU thread each (two sweeps never share a folder).
    # With a sweep that takes any key as an axis a lane could be one sweep per override set, e.g.
    #   movprune sweep src/movprune/recipes/repro/sst2.yaml --pruners magnitude,movement,l0,sensitivity \
    #       --remaining 10 --seeds 42,43 --grid train.max_steps=300,1000 output_dir=$out name=budget
    local out=${BUDGET_OUT:-results/budget-study} steps
    mkdir -p "$out"
    for steps in $BUDGETS; do
        budget_lane_a "$out" "$steps" > "$out/lane-a-$steps.log" 2>&1 &
        budget_lane_b "$out" "$steps" > "$out/lane-b-$steps.log" 2>&1 &
        wait
    done
}

sweep_b() {  # sweep_b OUT STEPS NAME [sweep options and overrides...]
    local out=$1 steps=$2 name=$3
    shift 3
    "$MOVPRUNE" sweep src/movprune/recipes/repro/sst2.yaml --seeds "$(budget_seeds "$steps")" \
        "train.max_steps=$steps" "output_dir=$out" "name=$name" "$@"
}

budget_lane_a() {  # the dense run first: the Fisher runs of lane b prune it
    sweep_b "$1" "$2" "steps-$2" --pruners none,magnitude,movement,l0,sensitivity --remaining 10
}

budget_lane_b() {
    local out=$1 steps=$2 dense="$1/steps-$2/none-r100-s42"
    sweep_b "$out" "$steps" "steps-$steps-soft" --pruners soft_movement --remaining 10 "$SOFT"
    sweep_b "$out" "$steps" "steps-$steps-maginit" --pruners movement --remaining 10 \
        pruner.scores_init_from=magnitude
    sweep_b "$out" "$steps" "steps-$steps-hybrid" --pruners magnitude --remaining 50 pruner.pattern=hybrid
    sweep_b "$out" "$steps" "steps-$steps-hybrid" --pruners soft_movement --remaining 50 \
        pruner.pattern=hybrid "$SOFT"
    # One-shot Fisher at hybrid 50% from this budget's dense run, no training: its whole training
    # budget is the dense run's.
    until [ -f "$dense/result.json" ]; do sleep 30; done
    "$MOVPRUNE" sweep src/movprune/recipes/cpu/sst2-fisher.yaml --pruners fisher --remaining 50 \
        --seeds 42 "model=$dense/model" "output_dir=$out" "name=steps-$steps-fisher"
    # ... and with a 300-step recovery (mask fixed), distilled from that dense run, also at 25%.
    "$MOVPRUNE" sweep src/movprune/recipes/cpu/sst2-fisher.yaml --pruners fisher --remaining 50,25 \
        --seeds 42 "model=$dense/model" "output_dir=$out" "name=steps-$steps-fisher-distill" \
        train.max_steps=300 train.lr=1e-4 "distill.teacher=$dense"
}

budget_study_report() {  # a table per budget, every budget in one, accuracy against budget, the figures
    local out=${BUDGET_OUT:-results/budget-study} steps last="" trained=()
    for steps in $BUDGETS; do
        [ -d "$out/steps-$steps" ] || continue
        last=$steps
        "$MOVPRUNE" compare "$out/steps-$steps"* --format markdown > "docs/repro/budget-$steps.md"
        "$MOVPRUNE" compare "$out/steps-$steps"* --format csv > "docs/repro/budget-$steps.csv"
        for dir in "$out/steps-$steps" "$out/steps-$steps"-{soft,maginit,hybrid}; do
            [ -d "$dir" ] && trained+=("$dir")
        done
    done
    [ -n "$last" ] || { echo "no budget-study runs in $out" >&2; return 1; }
    # The paper's Figures 3 and 4 for the largest budget that has run (each PNG with its data as .csv).
    "$MOVPRUNE" compare "$out/steps-$last" "$out/steps-$last"-{soft,maginit,hybrid} --figure weights \
        --plot "docs/repro/budget-$last-weights.png" > /dev/null
    "$MOVPRUNE" compare "$out/steps-$last" "$out/steps-$last"-{soft,maginit,hybrid} --figure layers \
        --plot "docs/repro/budget-$last-layers.png" > /dev/null
    # Every budget in one table (a row per budget) and accuracy against budget, a line per method:
    # the trained runs only (a Fisher run's own train.max_steps is 0 or its recovery's 300; its
    # budget is its dense start's, so it has a table of its own, a row per start).
    "$MOVPRUNE" compare "${trained[@]}" --rows train.max_steps --format markdown > docs/repro/budget-study.md
    "$MOVPRUNE" compare "${trained[@]}" --x train.max_steps --plot docs/repro/budget-study.png --format csv \
        > docs/repro/budget-study.csv
    if compgen -G "$out/steps-*-fisher*" > /dev/null; then
        "$MOVPRUNE" compare "$out"/steps-*-fisher* --rows model --format markdown > docs/repro/budget-fisher.md
    fi
}

fisher_runs() {  # one-shot Fisher pruning from a dense run at five budgets, then distilled recoveries
    local out=${FISHER_OUT:-results} sst2=${FISHER_SST2:-results/frontier-hybrid/none-r100-s42}
    local mrpc=${FISHER_MRPC:-results/repro-mrpc/none-r100-s42}
    sweep_f() { "$MOVPRUNE" sweep src/movprune/recipes/cpu/sst2-fisher.yaml --pruners fisher --seeds 42 \
        "output_dir=$out" "$@"; }
    sweep_f --remaining 75,60,50,40,25 "model=$sst2/model" name=fisher-sst2
    sweep_f --remaining 75,60,50,40,25 "model=$mrpc/model" name=fisher-mrpc task=mrpc train.max_seq_length=128
    sweep_f --remaining 50,25 "model=$sst2/model" name=fisher-sst2-distill train.max_steps=300 train.lr=1e-4 \
        "distill.teacher=$sst2"
}

fisher_report() {  # the Fisher runs' exports timed against their dense start (quiet machine), the table
    local out=${FISHER_OUT:-results} sst2=${FISHER_SST2:-results/frontier-hybrid/none-r100-s42}
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_speed.py "$sst2" "$out"/fisher-sst2 \
        --out docs/repro/fisher-speed.json > /dev/null
    "$MOVPRUNE" compare "$out"/fisher-sst2 "$out"/fisher-sst2-distill --format markdown > docs/repro/fisher-sst2.md
    "$MOVPRUNE" compare "$out"/fisher-mrpc --format markdown > docs/repro/fisher-mrpc.md
}

case "${1:-all}" in
    a) lane_a ;;
    b) lane_b ;;
    report) report ;;
    budget) budget ;;
    bf16) bf16 ;;
    remedies) OMP_NUM_THREADS=1 remedies_sst2; OMP_NUM_THREADS=1 remedies_mrpc; remedies_report ;;
    remedies-sst2) OMP_NUM_THREADS=1 remedies_sst2 ;;
    remedies-mrpc) OMP_NUM_THREADS=1 remedies_mrpc ;;
    remedies-report) remedies_report ;;
    remedies-probe) OMP_NUM_THREADS=1 remedies_probe ;;
    speed) OMP_NUM_THREADS=1 speed; speed_report ;;
    speed-runs) OMP_NUM_THREADS=1 speed ;;
    speed-report) speed_report ;;
    budget-study) OMP_NUM_THREADS=1 budget_study; budget_study_report ;;
    budget-study-runs) OMP_NUM_THREADS=1 budget_study ;;
    budget-study-report) budget_study_report ;;
    fisher) OMP_NUM_THREADS=2 fisher_runs; fisher_report ;;
    fisher-runs) OMP_NUM_THREADS=2 fisher_runs ;;
    fisher-report) fisher_report ;;
    all)
        mkdir -p results
        OMP_NUM_THREADS=1 lane_a > results/reproduce-lane-a.log 2>&1 &
        OMP_NUM_THREADS=1 lane_b > results/reproduce-lane-b.log 2>&1 &
        wait
        report ;;
    *) echo "usage: bash docs/reproduce.sh [a|b|report|budget|bf16|remedies[-sst2|-mrpc|-report]|speed[-runs|-report]|budget-study[-runs|-report]|fisher[-runs|-report]|all]" >&2; exit 2 ;;
esac
