r"""The papers' quality claims on real GLUE, in one resumable command (issue 17).

Runs a grid of `run_classifier.py` runs (and AdapterHub runs) over tasks ×
arms × seeds, one at a time, then writes one JSON, one Markdown table and PNG
plots of the dev scores (mean ± sample standard deviation over seeds).

The default grid, on all-MiniLM-L6-v2 (6 layers, hidden 384):

- GLUE table (Houlsby et al., 2019, Table 1): `adapters` (size 64, Houlsby
  placement, the scripts' defaults) and `full` fine-tuning on CoLA, SST-2,
  MRPC, STS-B, RTE and WNLI; 3 seeds for MRPC, STS-B and RTE, 1 for the rest.
  The mean leaves WNLI out, as that table and BERT's do.
- AdapterHub (`adapters` 1.3.0 on PyTorch, `bench/adapterhub_glue.py`) on
  MRPC and RTE, 3 seeds: the configuration `adapters` trains, rebuilt there.
- AdapterDrop curves (Rücklé et al., 2021, Fig. 2) on MRPC, STS-B, RTE and
  CoLA: the `adapters` runs scored with the lowest n = 0…5 layers' adapters
  dropped (`--eval_drop_first_n`), `robust` AdapterDrop models (3 seeds)
  scored at each n, and `specialised_{1,3,5}` models trained at their n (1
  seed). Every arm
  trains 3 epochs (SST-2: 1), but `robust`, which trains
  `run_classifier.py`'s default for robust runs (8 epochs at 5e-4).
- keras-hub's own LoRA (`lora_8`, `lora_16`: `--tuning=lora --lora_rank=r`)
  on MRPC and RTE, 3 seeds.
- SQuAD v1.1 (`run_squad.py`, README's recipe: 2 epochs on the first 44
  train articles, the whole dev set from `--squad_dir`): `adapters` and
  `full`, 1 seed; scored by exact_match and f1.

Each run is a folder `<output_dir>/<task>/<arm>/seed_<seed>`. A run whose
`eval_results.json` exists is done and skipped, so a killed suite resumes
where it stopped when the same command runs again (a killed
`run_classifier.py` run resumes from its backup; an AdapterHub run starts
over). A run that fails is logged to its `suite_error.log`, and the suite
goes on with the next, then exits 1. Each finished run gets a `suite_run.json`
with its command, the repository's commit (`git describe --always --dirty`),
its wall time and the load average around it. Finished runs keep their
`eval_results.json`, `saved_model/`, `adapter/` and logs;
`checkpoints/`, `backup/` and `best/` are removed unless
`--keep_checkpoints`.

Scores are the dev set's official GLUE metric of the last epoch
(`--export_from=last`, so the drop curves score the same weights), ×100:
CoLA Matthews correlation, MRPC F1, STS-B Pearson, accuracy for the rest.

  python bench/glue_suite.py --output_dir=/work/exp/glue_suite \
      --data_dir=../shared/data/glue

`--stages=report` only writes the report from the runs there are. A smaller
grid: `--tasks=mrpc,rte --arms=adapters,full --max_seeds=1`.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import app, flags, logging

from keras_adapters.tasks.glue import data as glue
from keras_adapters.tasks.glue import metrics
from keras_adapters.utils.atomic import atomic_path, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where the runs go (outside the repository).")
flags.DEFINE_string("data_dir", "../shared/data/glue", "The GLUE folder.")
flags.DEFINE_string("squad_dir", "../shared/data/squad",
                    "The SQuAD v1.1 folder (dev-v1.1.json, train-v1.1-first44articles.json).")
flags.DEFINE_list("stages", ["train", "report"], "Stages to run, in order.")
flags.DEFINE_list("tasks", None, "Only these tasks of the grid (default: all).")
flags.DEFINE_list("arms", None, "Only these arms of the grid (default: all).")
flags.DEFINE_integer("max_seeds", None, "At most this many seeds per task and arm.")
flags.DEFINE_list("drop_depths", [str(n) for n in range(6)],
                  "n at which adapters and robust runs are scored with AdapterDrop.")
flags.DEFINE_list("run_flags", [],
                  "Extra flags for every run, e.g. --init_from=<folder>,--max_train_examples=64 "
                  "(AdapterHub runs take --init_from, --max_train_examples, "
                  "--max_eval_examples, --max_seq_length and --batch_size).")
flags.DEFINE_bool("keep_checkpoints", False,
                  "Keep each finished run's checkpoints/, backup/ and best/.")
flags.DEFINE_string("results", "bench/results/glue_suite.json", "Summary JSON.")
flags.DEFINE_string("table", "bench/results/glue_suite.md", "Markdown tables.")
flags.DEFINE_string("plot", "bench/results/glue_suite_adapter_drop.png",
                    "AdapterDrop curves (PNG).")
flags.mark_flag_as_required("output_dir")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (42, 43, 44)
EPOCHS = {"sst2": 1}  # Else 3. SST-2 has 67k training pairs.
GLUE_SEEDS = {"cola": 1, "sst2": 1, "mrpc": 3, "stsb": 3, "rte": 3, "wnli": 1}
DROP_TASKS = ("mrpc", "stsb", "rte", "cola")
# In the table but not the mean, as in Houlsby et al.'s Table 1 and BERT's: its 71 dev pairs are
# built against its training set (a model that learns it scores below the majority class's 56.3).
NOT_IN_MEAN = ("wnli",)
SPECIALISED = (1, 3, 5)
# (arms, {task: seeds}), in the order they run. Robust AdapterDrop gets 3 seeds: on some seeds
# it never leaves the majority class (README, "The papers' claims on real GLUE").
GRID = (
    (("adapters", "full"), {t: GLUE_SEEDS[t] for t in ("mrpc", "rte", "stsb")}),
    (("robust",), {t: 3 for t in DROP_TASKS}),
    (tuple(f"specialised_{n}" for n in SPECIALISED), {t: 1 for t in DROP_TASKS}),
    (("adapters", "full"), {t: GLUE_SEEDS[t] for t in ("cola", "wnli", "sst2")}),
    (("adapterhub",), {"mrpc": 3, "rte": 3}),
    (("lora_8", "lora_16"), {"mrpc": 3, "rte": 3}),
    (("adapters", "full"), {"squad": 1}),  # run_squad.py, as README's SQuAD table.
)
SQUAD_FILES = ("train-v1.1-first44articles.json", "dev-v1.1.json")
ADAPTERHUB_FLAGS = ("init_from", "max_seq_length", "batch_size")  # Passed on to it.


def planned_runs():
    """`(task, arm, seed)` of the grid that `--tasks`, `--arms` and `--max_seeds` keep."""
    runs = []
    for arms, tasks in GRID:
        for task, seeds in tasks.items():
            for arm in arms:
                if (FLAGS.tasks and task not in FLAGS.tasks) or (
                        FLAGS.arms and arm not in FLAGS.arms):
                    continue
                count = min(seeds, FLAGS.max_seeds or seeds)
                runs += [(task, arm, seed) for seed in SEEDS[:count]
                         if (task, arm, seed) not in runs]
    return runs


def run_dir(task, arm, seed):
    return os.path.join(FLAGS.output_dir, task, arm, f"seed_{seed}")


def arm_flags(arm):
    """`run_classifier.py` flags of an arm (not the AdapterHub one)."""
    depths = f"--eval_drop_first_n={','.join(FLAGS.drop_depths)}"
    if arm == "adapters":
        return ["--tuning=adapters", depths]
    if arm == "full":
        return ["--tuning=full"]
    if arm == "robust":
        return ["--tuning=adapters", "--robust_adapter_drop", depths]
    if arm.startswith("specialised_"):
        return ["--tuning=adapters", f"--drop_first_n={arm.split('_')[1]}"]
    if arm.startswith("lora_"):
        return ["--tuning=lora", f"--lora_rank={arm.split('_')[1]}"]
    raise ValueError(f"Unknown arm {arm!r}.")


def command(task, arm, seed):
    folder = run_dir(task, arm, seed)
    if task == "squad":  # Its own epochs (2) and sequence length (384).
        train_file, predict_file = (os.path.join(FLAGS.squad_dir, f) for f in SQUAD_FILES)
        return [sys.executable, os.path.join(REPO, "run_squad.py"),
                f"--train_file={train_file}", f"--predict_file={predict_file}",
                f"--seed={seed}", f"--model_dir={folder}", "--export_from=last",
                f"--tuning={arm}", *FLAGS.run_flags]
    common = [f"--task={task}", f"--data_dir={FLAGS.data_dir}", f"--seed={seed}"]
    if arm != "robust":  # Robust runs train the scripts' default for them.
        common.append(f"--num_epochs={EPOCHS.get(task, 3)}")
    if arm == "adapterhub":
        passed = [f"--{name}={value}" for name, value in run_flag_values().items()
                  if name in ADAPTERHUB_FLAGS]
        return [sys.executable, os.path.join(REPO, "bench", "adapterhub_glue.py"),
                f"--seed={seed}", f"--num_epochs={EPOCHS.get(task, 3)}",
                f"--examples={os.path.join(folder, 'examples.json')}",
                f"--output_dir={folder}", *passed]
    return [sys.executable, os.path.join(REPO, "run_classifier.py"), *common,
            f"--model_dir={folder}", "--export_from=last", *arm_flags(arm), *FLAGS.run_flags]


def run_flag_values():
    """`--run_flags` as `{name: value}`."""
    return dict(f.lstrip("-").partition("=")[::2] for f in FLAGS.run_flags)


def limited_examples(task, split):
    """A split's examples, cut as `--run_flags`' --max_*_examples cut them in the runs."""
    name = "max_train_examples" if split == "train" else "max_eval_examples"
    limit = run_flag_values().get(name)
    examples = glue.load_examples(task, split, FLAGS.data_dir)
    return examples.head(int(limit)) if limit else examples


def write_examples(task, path):
    """The AdapterHub run's input: train and dev examples as JSON."""
    def split(name):
        examples = limited_examples(task, name)
        return {"text_a": list(examples.text_a),
                "text_b": None if examples.text_b is None else list(examples.text_b),
                "labels": examples.labels.tolist()}

    write_json(path, {"task": task, "num_labels": glue.get_task(task).num_classes,
                      "train": split("train"), "dev": split("dev")})


def score_adapterhub(task, folder):
    """Score an AdapterHub run's dev outputs with this library's metrics into
    its `eval_results.json` (`run_classifier.py`'s fields)."""
    with open(os.path.join(folder, "adapterhub_outputs.json")) as file:
        outputs = json.load(file)
    dev = limited_examples(task, "dev")
    predictions = metrics.predictions_from_outputs(task, np.array(outputs["dev_outputs"]))
    write_json(os.path.join(folder, "eval_results.json"), {
        "task": task, "tuning": "adapterhub", "versions": outputs["versions"],
        "train_examples": outputs["train_examples"],
        "train_seconds": outputs["train_seconds"],
        "train_step_seconds": outputs["train_step_seconds"],
        "parameters": outputs["parameters"],
        "dev": metrics.compute_metrics(task, dev.labels, predictions),
    })


def commit():
    result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                            capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def train(runs):
    """Run every unfinished run in turn; returns the `(task, arm, seed)` that failed."""
    to_go = [r for r in runs if not os.path.exists(os.path.join(run_dir(*r), "eval_results.json"))]
    logging.info("%d of %d runs to go.", len(to_go), len(runs))
    failed = []
    for index, (task, arm, seed) in enumerate(to_go):
        folder = run_dir(task, arm, seed)
        os.makedirs(folder, exist_ok=True)
        argv = command(task, arm, seed)
        logging.info("Run %d of %d: %s", index + 1, len(to_go), " ".join(argv))
        load, start, code = os.getloadavg()[0], time.time(), commit()  # The code it runs.
        if arm == "adapterhub":
            write_examples(task, os.path.join(folder, "examples.json"))
        result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if arm == "adapterhub" and not result.returncode:
            score_adapterhub(task, folder)
        if result.returncode:
            with open(os.path.join(folder, "suite_error.log"), "w") as log:
                log.write(result.stdout + result.stderr)
            logging.error("%s/%s/seed_%d failed (exit %d); see %s", task, arm, seed,
                          result.returncode, os.path.join(folder, "suite_error.log"))
            failed.append((task, arm, seed))
            continue
        write_json(os.path.join(folder, "suite_run.json"), {
            "command": argv[1:], "commit": code, "wall_seconds": round(time.time() - start, 1),
            "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2),
        })
        if not FLAGS.keep_checkpoints:
            for name in ("checkpoints", "backup", "best"):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return failed


def read_run(task, arm, seed):
    """One finished run's numbers, or None if it has not finished."""
    folder = run_dir(task, arm, seed)
    path = os.path.join(folder, "eval_results.json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        results = json.load(file)
    suite_path = os.path.join(folder, "suite_run.json")
    suite = {}
    if os.path.exists(suite_path):
        with open(suite_path) as file:
            suite = json.load(file)
    if task == "squad":
        metric, dev = "f1", {name: results[name] for name in ("exact_match", "f1")}
    else:
        metric, dev = metrics.primary_metric(task), results["dev"]
    return {
        "task": task, "arm": arm, "seed": seed, "dir": folder, "metric": metric,
        "score": 100 * dev[metric], "dev": dev,
        "adapter_drop": {int(n): scores["dev"]
                         for n, scores in results.get("adapter_drop", {}).items()},
        "train_seconds": results["train_seconds"],
        "step_seconds": results["train_step_seconds"]["median"],
        "parameters": results["parameters"],
        "commit": suite.get("commit"), "load_average": suite.get("load_average_before"),
    }


def summary(values):
    """`{"mean", "std", "n", "values"}`; std is the sample standard deviation (None for one)."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def by_arm(runs):
    """`{task: {arm: [run, ...]}}`."""
    grouped = {}
    for run in runs:
        grouped.setdefault(run["task"], {}).setdefault(run["arm"], []).append(run)
    return grouped


def glue_table(grouped, arms):
    """Score summaries per task and arm, and each arm's mean over the tasks every arm ran
    (but `NOT_IN_MEAN`)."""
    table = {task: {arm: summary([r["score"] for r in runs[arm]]) for arm in arms if arm in runs}
             for task, runs in grouped.items()}
    common = [task for task in table if task not in NOT_IN_MEAN
              and all(arm in table[task] for arm in arms)]
    means = {arm: statistics.fmean(table[task][arm]["mean"] for task in common)
             for arm in arms} if common else {}
    step_ratios = {arm: [step_median(runs[arm]) / step_median(runs["full"])
                         for runs in grouped.values()
                         if arm in runs and "full" in runs and step_median(runs[arm])
                         and step_median(runs["full"])] for arm in arms}
    return {"tasks": table, "mean_over": common, "mean": means,
            "step_vs_full": {arm: statistics.median(r) for arm, r in step_ratios.items() if r}}


def step_median(runs):
    steps = [r["step_seconds"] for r in runs if r["step_seconds"] is not None]
    return statistics.median(steps) if steps else None


def adapter_drop(grouped):
    """Per task of `DROP_TASKS`, the score against n for the standard, robust and
    specialised arms, relative to the standard adapters at n = 0, and each arm's
    training step speed-up over the standard adapters."""
    curves = {}
    for task, runs in grouped.items():
        if (task not in DROP_TASKS or "adapters" not in runs
                or not runs["adapters"][0]["adapter_drop"]):
            continue
        curve = {"standard": _mean_curve(runs["adapters"])}
        if "robust" in runs:
            curve["robust"] = _mean_curve(runs["robust"])
        specialised = {n: statistics.fmean(r["score"] for r in runs[f"specialised_{n}"])
                       for n in SPECIALISED if f"specialised_{n}" in runs}
        if specialised:
            curve["specialised"] = specialised
        base = curve["standard"][0]
        curve["relative"] = {arm: {n: 100 * v / base for n, v in values.items()}
                             for arm, values in curve.items()}
        standard_step = step_median(runs["adapters"])
        curve["step_speedup"] = {
            arm: standard_step / step_median(runs[arm]) for arm in runs
            if arm != "adapterhub" and step_median(runs[arm]) and standard_step}
        curves[task] = curve
    return curves


def _mean_curve(runs):
    """`{n: mean score ×100}` over `runs` at each depth n they were all scored at."""
    depths = sorted(set.intersection(*(set(r["adapter_drop"]) for r in runs)))
    return {n: statistics.fmean(100 * r["adapter_drop"][n][r["metric"]] for r in runs)
            for n in depths}


def averaged_drop(curves):
    """Each arm's relative score per n, averaged over the tasks that have it."""
    averaged = {}
    for curve in curves.values():
        for arm, values in curve["relative"].items():
            for n, value in values.items():
                averaged.setdefault(arm, {}).setdefault(n, []).append(value)
    return {arm: {n: statistics.fmean(v) for n, v in sorted(values.items())}
            for arm, values in averaged.items()}


def side_by_side(grouped, arms, base="adapters"):
    """Per task: score, training seconds, step seconds and trained parameters
    of `base` and `arms`, over the seeds each ran."""
    rows = {}
    for task, runs in grouped.items():
        present = [arm for arm in (base, *arms) if arm in runs]
        if len(present) < 2 or base not in present:
            continue
        rows[task] = {arm: {
            "score": summary([r["score"] for r in runs[arm]]),
            "train_seconds": [r["train_seconds"] for r in runs[arm]],
            "step_seconds": step_median(runs[arm]),
            "trained_parameters": runs[arm][0]["parameters"]["trained"],
        } for arm in present}
    return rows


def _cell(s):
    if s is None:
        return "–"
    spread = f" ± {s['std']:.1f}" if s["std"] is not None else ""
    return f"{s['mean']:.1f}{spread} ({s['n']})"


def _glue_lines(report):
    """The GLUE table: a row per task, the mean, the trained parameters."""
    glue_arms = report["glue"]["arms"]
    if not report["glue"]["tasks"] or not glue_arms:
        return []
    lines = ["| task (metric) | " + " | ".join(glue_arms) + " |",
             "|---|" + "---:|" * len(glue_arms)]
    for task, cells in report["glue"]["tasks"].items():
        lines.append(f"| {task} ({metrics.primary_metric(task)}) | "
                     + " | ".join(_cell(cells.get(arm)) for arm in glue_arms) + " |")
    if report["glue"]["mean"]:
        lines.append(f"| mean ({', '.join(report['glue']['mean_over'])}) | "
                     + " | ".join(f"{report['glue']['mean'][a]:.1f}" for a in glue_arms) + " |")
    ratios = report["glue"]["step_vs_full"]
    lines.append("| training step time vs full (median over tasks) | " + " | ".join(
        f"{ratios[a]:.2f}x" if a in ratios else "–" for a in glue_arms) + " |")
    parameters = report["parameters"]
    lines.append("| trained parameters (% of full) | " + " | ".join(
        f"{parameters[a]['trained']:,} ({parameters[a]['percent']:.2f}%)" if a in parameters
        else "–" for a in glue_arms) + " |")
    return lines


def markdown(report):
    """README-ready Markdown tables of `report`."""
    lines = [f"Runs from commits {', '.join(report['commits'])}; scores ×100, mean ± sample "
             "standard deviation (seeds).", "", *_glue_lines(report)]
    for title, rows in (("AdapterHub", report["adapterhub"]), ("LoRA", report["lora"])):
        if not rows:
            continue
        lines += ["", f"{title}:", "", "| task | arm | score | train seconds per run | step seconds "
                  "(median) | trained parameters |", "|---|---|---:|---:|---:|---:|"]
        for task, arms in rows.items():
            for arm, row in arms.items():
                seconds = ", ".join(f"{s:.0f}" for s in row["train_seconds"])
                step = f"{row['step_seconds']:.3f}" if row["step_seconds"] else "–"
                lines.append(f"| {task} | {arm} | {_cell(row['score'])} | {seconds} | {step} | "
                             f"{row['trained_parameters']:,} |")
    if report["squad"]:
        lines += ["", "SQuAD v1.1 dev:", "", "| arm | exact_match | f1 | train seconds | step seconds "
                  "(median) | trained parameters |", "|---|---:|---:|---:|---:|---:|"]
        for arm, row in report["squad"].items():
            step = f"{row['step_seconds']:.3f}" if row["step_seconds"] else "–"
            lines.append(f"| {arm} | {_cell(row['exact_match'])} | {_cell(row['f1'])} | "
                         f"{', '.join(f'{s:.0f}' for s in row['train_seconds'])} | {step} | "
                         f"{row['trained_parameters']:,} |")
    curves = report["adapter_drop"]["tasks"]
    if curves:
        depths = sorted({n for c in curves.values() for n in c["standard"]})
        lines += ["", "AdapterDrop:", "", "| task | arm | " + " | ".join(f"n={n}" for n in depths)
                  + " | training step speed-up |", "|---|---|" + "---:|" * (len(depths) + 1)]
        rows = [(task, curve, curve.get("step_speedup", {})) for task, curve in curves.items()]
        rows.append(("average, % of standard n=0", report["adapter_drop"]["average"], {}))
        for task, values, speedups in rows:
            for arm in ("standard", "robust", "specialised"):
                if arm not in values:
                    continue
                speedup = (", ".join(f"n={n}: {speedups[f'specialised_{n}']:.2f}x"
                                     for n in SPECIALISED if f"specialised_{n}" in speedups)
                           if arm == "specialised" else
                           f"{speedups[_ARM[arm]]:.2f}x" if _ARM[arm] in speedups else "")
                lines.append(f"| {task} | {arm} | " + " | ".join(
                    f"{values[arm][n]:.1f}" if n in values[arm] else "" for n in depths)
                    + f" | {speedup} |")
    return "\n".join(lines) + "\n"


_ARM = {"standard": "adapters", "robust": "robust"}
_STYLES = {"standard": ("o-", "C0"), "robust": ("s-", "C1"), "specialised": ("D", "C2")}


def plot(report, path):
    """One panel per task (score against n) and one of the average relative to standard n=0."""
    from matplotlib.figure import Figure

    curves = report["adapter_drop"]["tasks"]
    if not curves:
        return
    panels = [*curves.items(), ("average", {"relative": None})]
    figure = Figure(figsize=(3.2 * len(panels), 3.2), layout="constrained")
    for axis, (task, curve) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        values = report["adapter_drop"]["average"] if task == "average" else curve
        for arm, (style, color) in _STYLES.items():
            if arm in values:
                depths = sorted(values[arm])
                axis.plot(depths, [values[arm][n] for n in depths], style, color=color,
                          label=arm)
        axis.set_title(task if task == "average" else
                       f"{task} ({metrics.primary_metric(task)})")
        axis.set_xlabel("adapters dropped in the lowest n layers")
        axis.set_ylabel("% of standard at n=0" if task == "average" else "dev score ×100")
        axis.grid(alpha=0.3)
    handles = {}  # Every arm once, whichever panels have it.
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.axes[0].legend(handles.values(), handles.keys())
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)


def report(runs):
    """Read every finished run of `runs`; write the JSON, table and plot."""
    finished = [r for r in (read_run(*run) for run in runs) if r is not None]
    grouped = by_arm([r for r in finished if r["task"] != "squad"])
    squad = {arm: {"exact_match": summary([r["dev"]["exact_match"] * 100 for r in squad_runs]),
                   "f1": summary([r["score"] for r in squad_runs]),
                   "train_seconds": [r["train_seconds"] for r in squad_runs],
                   "step_seconds": step_median(squad_runs),
                   "trained_parameters": squad_runs[0]["parameters"]["trained"]}
             for arm, squad_runs in by_arm([r for r in finished if r["task"] == "squad"]).get(
                 "squad", {}).items()}
    glue_arms = [a for a in ("adapters", "full") if any(a in g for g in grouped.values())]
    full_trained = {t: g["full"][0]["parameters"]["trained"] for t, g in grouped.items()
                    if "full" in g}
    parameters = {}
    for task, runs_by_arm in grouped.items():
        for arm, arm_runs in runs_by_arm.items():
            if arm not in parameters and task in full_trained:
                trained = arm_runs[0]["parameters"]["trained"]
                parameters[arm] = {"trained": trained,
                                   "percent": 100 * trained / full_trained[task], "task": task}
    curves = adapter_drop(grouped)
    result = {
        "commits": sorted({r["commit"] or "unknown" for r in finished}),
        "runs": finished,
        "glue": {"arms": glue_arms, **glue_table(grouped, glue_arms)},
        "parameters": parameters,
        "adapterhub": side_by_side(grouped, ["adapterhub"]),
        "lora": side_by_side(grouped, ["lora_8", "lora_16"]),
        "adapter_drop": {"tasks": curves, "average": averaged_drop(curves)},
        "squad": squad,
    }
    write_json(FLAGS.results, result)
    with atomic_path(FLAGS.table) as temporary, open(temporary, "w") as file:
        file.write(markdown(result))
    plot(result, FLAGS.plot)
    return result


def main(argv):
    del argv
    for task in FLAGS.tasks or []:
        if task != "squad":
            glue.get_task(task)
    unknown = set(FLAGS.arms or []) - {a for arms, _ in GRID for a in arms}
    if unknown:
        raise flags.ValidationError(f"--arms: unknown arms {sorted(unknown)}.")
    runs = planned_runs()
    failed = train(runs) if "train" in FLAGS.stages else []
    if "report" in FLAGS.stages:
        result = report(runs)
        logging.info("GLUE means: %s", result["glue"]["mean"])
    if failed:
        logging.error("Failed runs: %s", failed)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
