"""Print the README's live-loop tables from the raw files in benchmarks/results/.

    python benchmarks/loop_tables.py > runs/loop_tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def _cell(seconds: float) -> str:
    return "not recorded" if np.isnan(seconds) else f"{seconds:.1f} s"


def loop_table(data: dict) -> str:
    lines = ["| tasks | annotation → new head in Label Studio (median of rounds) | rounds | reading changes | "
             "training | push | rows written / deleted per version | prediction rows after | "
             "Label Studio DB growth per version | backend peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        rs = row["rounds"]

        def med(key: str, rounds: list[dict] = rs) -> float:
            values = [r[key] for r in rounds if r.get(key) is not None]
            return float(np.median(values)) if values else float("nan")

        each = ", ".join(f"{r['annotation_to_head_s']:.1f}" for r in rs)
        lines.append(
            f"| {row['tasks']:,} | {row['annotation_to_head_s_median']:.1f} s | {each} s |"
            f" {_cell(med('reading_changes_s'))} | "
            f"{med('training_s'):.1f} s | {med('push_s'):.1f} s | {med('rows_written'):.0f} / "
            f"{med('rows_deleted'):.0f} | {rs[-1]['prediction_rows_after']:,} | "
            f"{med('db_growth_bytes') / 1e6:.2f} MB | {row['backend_peak_rss_mb'] / 1024:.1f} GB |")
    return "\n".join(lines)


def _until_view(r: dict) -> float:
    """The push's seconds until the view orders by the new version (older files: the push less its marks)."""
    if r.get("push_until_view_s") is not None:
        return r["push_until_view_s"]
    return r["push_s"] - r["push_steps_s"].get("bulk_mark", 0.0)


def view_table(data: dict) -> str:
    """Annotation -> the new head ordering the view, and -> the marks written too (each round and the median)."""
    lines = ["| tasks | warm steps | annotation → new head in the view (median) | rounds | annotation → marks "
             "written too (median) | rounds | training | push until the view | marks |", "|---" * 9 + "|"]
    for row in data["rows"]:
        rs = row["rounds"]
        view = [r["annotation_to_view_s"] for r in rs]
        full = [r["annotation_to_head_s"] for r in rs]
        marks = [r["push_steps_s"].get("bulk_mark", 0.0) for r in rs]
        patches = [r["marks_written"] for r in rs if r.get("marks_written") is not None]
        patch_cell = f" ({np.median(patches):.0f} PATCHes)" if patches else ""
        lines.append(
            f"| {row['tasks']:,} | {row['warm_steps']} | {np.median(view):.1f} s | "
            f"{', '.join(f'{v:.1f}' for v in view)} s | {np.median(full):.1f} s | "
            f"{', '.join(f'{v:.1f}' for v in full)} s | {np.median([r['training_s'] for r in rs]):.1f} s | "
            f"{np.median([_until_view(r) for r in rs]):.1f} s | "
            f"{np.median(marks):.1f} s{patch_cell} |")
    return "\n".join(lines)


def gpu_composite_table(data: dict, gpu: dict) -> str:
    """Annotation -> new head in the view with the model's work taken from a GPU run instead of the CPU's.

    Per round: the CPU loop's view time, less its training and scoring, plus the GPU's warm retrain,
    pool encoding and SVM + ranking (benchmarks/version_work.py at the same pool size). The rest
    (webhook, reading changes, saving, Label Studio's writes until the view) stays as measured.
    """
    model = gpu["warm_retrain"]["seconds"] + gpu["encode_pool"]["seconds"] + gpu["svm_and_ranking"]["seconds"]
    lines = ["| tasks | CPU: annotation → view | of which training | of which scoring | of which push until the view "
             "| rest | GPU model work (retrain + encode + rank) | estimate on the GPU |", "|---" * 8 + "|"]
    for row in data["rows"]:
        rs = [r for r in row["rounds"] if r.get("scoring_s") is not None and r.get("push_until_view_s") is not None]
        if not rs:
            continue
        view = np.array([r["annotation_to_view_s"] for r in rs])
        train = np.array([r["training_s"] for r in rs])
        score = np.array([r["scoring_s"] for r in rs])
        until_view = np.array([r["push_until_view_s"] for r in rs])
        estimate = view - train - score + model
        lines.append(f"| {row['tasks']:,} | {np.median(view):.1f} s | {np.median(train):.1f} s | "
                     f"{np.median(score):.1f} s | {np.median(until_view):.1f} s | "
                     f"{np.median(view - train - score - until_view):.1f} s | {model:.1f} s "
                     f"({gpu['device_name']}, {gpu['settings']['steps']} steps) | "
                     f"{np.median(estimate):.1f} s ({', '.join(f'{e:.1f}' for e in estimate)}) |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_costs_table(data: dict) -> str:
    """Each Label Studio write of a push (benchmarks/ls_write_costs.py): median over the versions pushed."""
    lines = ["| Label Studio setting | tasks | import the head (rows) | set model version | delete an earlier "
             "version | `meta` of the marked tasks read again | one `meta` PATCH | the claim read (a poll) | "
             "the claim written and read back | the head read with its rows (a retry) |", "|---" * 10 + "|"]

    def ms(r: dict, key: str) -> str:
        return f"{r[key]:.0f} ms" if key in r else "not measured"
    for r in data["rows"]:
        get = f"{r['meta_reread_ms_median']:.0f} ms ({r['meta_reread_tasks']} tasks)" if "meta_reread_ms_median" in r \
            else "not measured"
        lines.append(f"| {r['setting']} | {r['tasks']:,} | {np.median(r['import_head_s']):.2f} s ({r['head']}) | "
                     f"{np.median(r['set_model_version_s']):.2f} s | {np.median(r['delete_version_s']):.2f} s | "
                     f"{get} | {r['meta_patch_ms_median']:.0f} ms | {ms(r, 'claim_read_ms_median')} | "
                     f"{ms(r, 'claim_write_ms_median')} | "
                     + (f"{r['head_read_s_median']:.2f} s |" if "head_read_s_median" in r else "not measured |"))
    return "\n".join(lines)


def queue_push_table(data: dict) -> str:
    """A version pushed in view mode and in queue mode (benchmarks/queue_push.py): the difference is the queue's."""
    lines = ["| version | push, view mode | push, queue mode | the queue's part | queue rows written or kept | "
             "queue tasks |", "|---" * 6 + "|"]
    for row in data["rows"]:
        for r in row["rounds"]:
            lines.append(f"| {r['version']} | {r['view_s']:.1f} s | {r['queue_s']:.1f} s | "
                         f"{r['queue_s'] - r['view_s']:+.1f} s | {r['queue_rows']} | {r['queue_tasks']:,} |")
        later = [r["queue_s"] - r["view_s"] for r in row["rounds"][1:]]
        lines.append(f"\n{row['tasks']:,} tasks a project, head {row['head']}, top-K {row['top_k']}, the queue seeded "
                     f"with {row['queue_seed']:,} copies; the queue's part from the second version on: median "
                     f"{np.median(later):+.1f} s; the queue's first {row['queue_first']} tasks in the ranking's order: "
                     f"{'yes' if row['queue_shows_the_ranking'] else 'no'}.")
    return "\n".join(lines)


def new_tasks_table(data: dict) -> str:
    """The backend's own bookkeeping for a batch of new tasks and for a quiet poll (benchmarks/new_tasks.py)."""
    lines = ["| pool | batch | store the batch, now / before | find the new tasks, now / before | "
             "merge into the snapshot, now / before | a batch in all, now / before | "
             "a quiet poll's look, now / before |", "|---" * 7 + "|"]
    for r in data["rows"]:
        lines.append(f"| {r['pool']:,} | {r['batch']} | {r['append_ms']:.1f} / {r['append_before_ms']:.1f} ms | "
                     f"{r['find_now_ms']:.1f} / "
                     f"{r['find_before_ms']:.1f} ms | {r['merge_now_ms']:.1f} / {r['merge_before_ms']:.1f} ms | "
                     f"{r['batch_now_ms']:.1f} / {r['batch_before_ms']:.1f} ms | {r['quiet_now_ms']:.1f} / "
                     f"{r['quiet_before_ms']:.1f} ms |")
    return "\n".join(lines)


def pool_gaps_table(data: dict) -> str:
    """A training's read of a pool some of whose tasks were deleted: now, gathered, before (benchmarks/pool_gaps.py)."""
    lines = ["| pool | deleted | read through the gaps (now) | the live rows gathered | compacted first (before) |",
             "|---" * 5 + "|"]
    for r in data["rows"]:
        lines.append(f"| {r['pool']:,} ({r['pool_mb']:,.0f} MB) | {100 * r['deleted_share']:g} % | "
                     f"{r['stretch_s']:.1f} s, {r['stretch_peak_mb']:,.0f} MB | "
                     f"{r['gather_s']:.1f} s, {r['gather_peak_mb']:,.0f} MB | {r['compact_s']:.1f} s + the read |")
    return "\n".join(lines)


def ingest_table(data: dict) -> str:
    lines = ["| tasks | upload to Label Studio | first version (ingest + first training + push) | of which ingest | "
             "first training |", "|---|---|---|---|---|"]
    for row in data["rows"]:
        ingest = row.get("of_which_ingest_s")
        ingest_cell = f"{ingest:.0f} s" if ingest is not None else "not recorded"
        lines.append(f"| {row['tasks']:,} | {row['upload_s']:.0f} s | {row['first_version_s']:.0f} s | "
                     f"{ingest_cell} | {row['first_train_s']:.0f} s |")
    return "\n".join(lines)


def push_steps(data: dict) -> str:
    lines = ["| tasks | " + " | ".join(["delete rows (this and earlier versions)", "import head", "model version",
                                       "list versions", "view", "marks"]) + " |", "|---" * 7 + "|"]
    keys = ["delete_predictions", "import_predictions", "set_model_version", "model_versions"]
    for row in data["rows"]:
        steps = [r["push_steps_s"] for r in row["rounds"]]
        cells = []
        for k in keys:
            cells.append(f"{np.median([s.get(k, 0.0) for s in steps]):.1f} s")
        cells += [f"{np.median([s.get('ensure_view', 0.0) for s in steps]):.1f} s",
                  f"{np.median([s.get('bulk_mark', 0.0) for s in steps]):.1f} s"]
        lines.append(f"| {row['tasks']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def version_work_table() -> str:
    lines = ["| machine | items | network | write pool | warm retrain (steps) | encode pool | SVM + ranking | "
             "per version (retrain + encode + rank) | peak RSS | peak GPU memory |", "|---" * 10 + "|"]
    files = [("version-work-cpu-1m.json", "2-core CPU"),
             ("gpu-h100-loop/version-work-gpu-1m.json", "H100"),
             ("gpu-h100-loop/version-work-gpu-60k-16-32-64.json", "H100"),
             ("gpu-h100-loop/version-work-gpu-60k-32-64-128.json", "H100")]
    for name, machine in files:
        d = _load(name)
        if d is None:
            continue
        per = d["warm_retrain"]["seconds"] + d["encode_pool"]["seconds"] + d["svm_and_ranking"]["seconds"]
        gpu = f"{d['peak_gpu_mb'] / 1024:.1f} GB" if d.get("peak_gpu_mb") else "–"
        lines.append(f"| {machine} | {d['n']:,} | {'/'.join(map(str, d['settings']['channels']))} | "
                     f"{d['pool_write']['seconds']:.1f} s | {d['warm_retrain']['seconds']:.1f} s "
                     f"({d['settings']['steps']}) | {d['encode_pool']['seconds']:.1f} s | "
                     f"{d['svm_and_ranking']['seconds']:.2f} s | {per:.1f} s | {d['peak_rss_mb'] / 1024:.1f} GB | "
                     f"{gpu} |")
    return "\n".join(lines)


def budget_table() -> str:
    rows = []
    header = None
    for name, label in (("budget-150-curve.json", "150 steps a round"),
                        ("budget-full-curve.json", "full passes (235 steps)")):
        d = _load(f"gpu-h100-loop/{name}")
        if d is None:
            continue
        runs = d["runs"]
        ns = [p["labeled"] for p in runs[0]["curve"]]
        header = header or ns
        errs = np.array([[p["test_error"] for p in r["curve"]] for r in runs]) * 100
        secs = np.array([[p["train_seconds"] for p in r["curve"][1:]] for r in runs])
        cells = [f"{m:.1f} ± {s:.1f} %" for m, s in zip(errs.mean(0), errs.std(0, ddof=1), strict=True)]
        rows.append((label, cells, errs[:, -1], secs.mean()))
    if not rows or header is None:
        return ""
    pick = [0, 2, 4, 6, 8] if len(header) >= 9 else list(range(len(header)))
    lines = ["| warm rounds | " + " | ".join(f"{header[i]}" for i in pick) + " labels | seconds a round |",
             "|---" * (len(pick) + 2) + "|"]
    for label, cells, _, sec in rows:
        lines.append(f"| {label} | " + " | ".join(cells[i] for i in pick) + f" | {sec:.1f} s |")
    if len(rows) == 2:
        diff = rows[0][2] - rows[1][2]
        lines.append("")
        lines.append(f"Paired per-seed difference at {header[-1]} labels (budget − full): "
                     f"{', '.join(f'{d:+.1f}' for d in diff)} points (mean {diff.mean():+.1f}).")
    return "\n".join(lines)


def budget_cpu_table() -> str:
    """The per-round budget on the CPU (benchmarks/cpu_budget.sh): validation and test error per budget, paired."""
    found = sorted((RESULTS / "budget-cpu-60k").glob("steps-*/curve.json"), key=lambda p: int(p.parent.name[6:]))
    if not found:
        return ""
    out = []
    finals = {}
    for key, title in (("val_error", "validation"), ("test_error", "test")):
        lines, ns = [], None
        for path in found:
            runs = sorted(json.loads(path.read_text())["runs"], key=lambda r: r["seed"])
            ns = [p["labeled"] for p in runs[0]["curve"]]
            errs = np.array([[p[key] for p in r["curve"]] for r in runs]) * 100
            secs = np.array([[p["train_seconds"] for p in r["curve"][1:]] for r in runs])
            cells = [f"{m:.1f} ± {d:.1f} %" for m, d in zip(errs.mean(0), errs.std(0, ddof=1), strict=True)]
            lines.append(f"| {path.parent.name[6:]} steps a round | " + " | ".join(cells[::2])
                         + f" | {secs.mean():.1f} s | {len(runs)} |")
            finals[(key, path.parent.name)] = errs[:, -1]
        head = f"| {title} error | " + " | ".join(str(n) for n in ns[::2]) + " labels | training a round | seeds |"
        out += [head, "|---" * (len(ns[::2]) + 3) + "|", *lines, ""]
    names = [p.parent.name for p in found]
    if len(names) == 2:
        for key in ("val_error", "test_error"):
            diff = finals[(key, names[0])] - finals[(key, names[1])]
            out.append(f"Paired per-seed difference at {ns[-1]} labels, {key.split('_')[0]} ({names[0][6:]} − "
                       f"{names[1][6:]} steps): {', '.join(f'{d:+.1f}' for d in diff)} points "
                       f"(mean {diff.mean():+.1f}).")
    return "\n".join(out)


def demo_table() -> str:
    """``make demo`` run several times back to back: error on the held-out tasks, mean ± sd over the runs."""
    runs = sorted((RESULTS / "demo-digits-heldout").glob("run-*/curve.json"))
    if not runs:
        return ""
    curves: dict[str, list[list[float]]] = {}
    labels: list[int] = []
    for path in runs:
        for r in json.loads(path.read_text())["runs"]:
            curves.setdefault(r["strategy"], []).append([p["test_error"] * 100 for p in r["curve"]])
            labels = [p["labeled"] for p in r["curve"]]
    lines = ["| annotator | " + " | ".join(str(n) for n in labels) + " labels |", "|---" * (len(labels) + 1) + "|"]
    names = {"margin": "\"Most uncertain first\" order", "random": "random order"}
    for strategy, rows in curves.items():
        a = np.array(rows)
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        lines.append(f"| {names.get(strategy, strategy)} | "
                     + " | ".join(f"{m:.1f} ± {d:.1f} %" for m, d in zip(a.mean(0), sd, strict=True)) + " |")
    return f"{len(runs)} runs\n\n" + "\n".join(lines)


def soak_table(data: dict, points: int = 6) -> str:
    """The soak (benchmarks/soak.py): what the backend holds as versions follow each other, and its slope per round.

    The slope is a least-squares fit over the second half of the rounds, after start-up effects.
    """
    rs = data["rounds"]
    picks = sorted({int(i) for i in np.rint(np.linspace(0, len(rs) - 1, points))})
    mirror = "mirror_db_bytes" if "mirror_db_bytes" in rs[0] else "mirror_json_bytes"  # runs before mirror.db: a file
    cols = [("version", lambda r: r["version"]), ("labels", lambda r: f"{r['labeled']:,}"),
            ("resident memory", lambda r: f"{r['rss_mb']:.0f} MB"), ("threads", lambda r: str(r["threads"])),
            ("open files", lambda r: str(r["open_fds"])), ("versions on disk", lambda r: str(r["versions_kept"])),
            ("`MODEL_DIR`", lambda r: f"{r['model_dir_bytes'] / 1e6:.1f} MB"),
            (f"`{mirror[:-6].replace('_', '.')}`", lambda r: f"{r[mirror] / 1e3:.0f} kB"),
            ("Label Studio DB", lambda r: f"{r['ls_db_bytes'] / 1e6:.1f} MB"),
            ("prediction rows", lambda r: str(r["prediction_rows"])), ("this round", lambda r: f"{r['seconds']:.1f} s")]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|---" * len(cols) + "|"]
    lines += ["| " + " | ".join(f(rs[i]) for _, f in cols) + " |" for i in picks]
    half = rs[len(rs) // 2:]
    if len(half) >= 2:
        v = np.arange(len(half))

        def per100(key: str) -> float:
            return float(np.polyfit(v, [r[key] for r in half], 1)[0] * 100)

        lines.append("")
        lines.append(f"Slope over the last {len(half)} rounds, per 100 rounds: resident memory "
                     f"{per100('rss_mb'):+.1f} MB, open files {per100('open_fds'):+.1f}, threads "
                     f"{per100('threads'):+.1f}, `MODEL_DIR` {per100('model_dir_bytes') / 1e6:+.2f} MB, "
                     f"Label Studio DB {per100('ls_db_bytes') / 1e6:+.2f} MB, a round {per100('seconds'):+.2f} s "
                     f"(median round {np.median([r['seconds'] for r in half]):.1f} s).")
    if "views" in rs[0]:
        views = [r["views"] for r in rs]
        lease = (data.get("settings") or {}).get("lease", 3600)
        lines.append("")
        lines.append(f"The writer claim (`WRITER_LEASE_SECONDS` {lease:g}): the project's views {min(views)} to "
                     f"{max(views)} over the rounds; pushes that took the project over "
                     f"{sum(bool(r['took_over']) for r in rs)} of {len(rs)}.")
    return "\n".join(lines)


def poll_reads_table(data: dict) -> str:
    """One poll after lost webhooks: the tasks saved since the last poll, against every labeled task (medians)."""
    lines = ["| tasks | labeled | poll reads | labeled tasks read | task pages | poll (median) | rounds | "
             "mirror equal to Label Studio after |", "|---" * 8 + "|"]
    names = {"changed": "the tasks saved since the last poll", "all": "every labeled task (before)"}
    for row in data["rows"]:
        for how in ("changed", "all"):
            rs = [r for r in row["rounds"] if r["read"] == how]
            med = {k: float(np.median([r[k] for r in rs])) for k in ("poll_s", "task_pages", "labeled_tasks_read")}
            equal = sum(r["mirror_matches_label_studio"] for r in rs)
            lines.append(f"| {row['tasks']:,} | {row['labeled']:,} | {names[how]} | {med['labeled_tasks_read']:,.0f} | "
                         f"{med['task_pages']:.0f} | {med['poll_s']:.2f} s | {len(rs)} | {equal} of {len(rs)} |")
    return "\n".join(lines)


def mirror_saves_table(data: dict) -> str:
    """A save of the mirror (benchmarks/mirror_saves.py): mirror.db against the whole-file JSON of before (medians)."""
    lines = ["| labeled tasks | save | after 12 changes | nothing changed | rows written | load at start-up | "
             "on disk |", "|---" * 7 + "|"]
    for row in data["rows"]:
        med = {k: float(np.median(v)) for k, v in row.items() if isinstance(v, list)}
        lines.append(f"| {row['labeled']:,} | `mirror.db`, what changed (now) | {med['changed_s']:.3f} s | "
                     f"{med['unchanged_s']:.3f} s | {med['changed_rows']:.0f} | {med['load_s']:.2f} s | "
                     f"{row['db_bytes'] / 1e6:.0f} MB |")
        lines.append(f"| {row['labeled']:,} | `mirror.json`, the whole file (before) | {med['json_changed_s']:.3f} s | "
                     f"{med['json_unchanged_s']:.3f} s | all | {med['json_load_s']:.2f} s | "
                     f"{row['json_bytes'] / 1e6:.0f} MB |")
    return "\n".join(lines)


def epoch_time_table() -> str:
    """One epoch of SAE training over 60k images (benchmarks/epoch_time.py), one row per run as recorded."""
    lines = ["| device | conv channels | epoch (median) | epochs timed | peak resident memory |", "|---" * 5 + "|"]
    for name in ("epoch-time-h200.jsonl", "epoch-time-cpu.jsonl"):
        path = RESULTS / name
        for rec in (json.loads(line) for line in path.read_text().splitlines() if line.strip()):
            device = rec["device_name"] if rec["device"] == "cuda" else f"{rec['threads']}-core CPU"
            rss = rec.get("peak_rss_mb")
            lines.append(f"| {device} | {'/'.join(map(str, rec['channels']))} | {rec['median_epoch_seconds']:.2f} s | "
                         f"{len(rec['epoch_seconds'])} | {'not measured' if rss is None else f'{rss / 1e3:.2f} GB'} |")
    return "\n".join(lines)


def predict_load_table(data: dict) -> str:
    """``/predict`` under concurrent clients (benchmarks/predict_load.py)."""
    lines = ["| phase | tasks per request | clients | p50 | p99 | requests/s | tasks/s |", "|---" * 7 + "|"]
    names = {"idle": "idle", "training": "during a training"}

    def ms(v: float) -> str:
        return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms"

    for r in data["rows"]:
        lines.append(f"| {names[r['phase']]} | {r['per_request']} | {r['concurrency']} | {ms(r['p50_ms'])} | "
                     f"{ms(r['p99_ms'])} | {r['requests_per_s']:.0f} | {r['tasks_per_s']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    loop = _load("loop-latency-v2-cpu.json")
    if loop:
        print(f"Loop ({loop['machine']}):\n")
        print(loop_table(loop) + "\n")
        print(ingest_table(loop) + "\n")
        print(push_steps(loop) + "\n")
    rerun = _load("loop-latency-v2-cpu-10k-after-review.json")
    if rerun:
        print(f"Rerun after the review's refactor ({rerun['machine']}):\n")
        print(loop_table(rerun) + "\n")
    steps60 = _load("loop-latency-v3-cpu-60k-steps60.json")
    if steps60:
        print(f"60k with 60 warm steps, the view timed apart from the marks ({steps60['machine']}):\n")
        print(view_table(steps60) + "\n")
        print(loop_table(steps60) + "\n")
    gpu = _load("gpu-h100-loop/version-work-gpu-60k-16-32-64.json")
    for name, title in [("loop-latency-v4-cpu-60k-steps60.json", "60k, the older rows deleted after the view switched"),
                        ("loop-latency-v5-cpu-60k-steps60.json", "60k rerun, mark PATCHes counted"),
                        ("loop-latency-v6-cpu-60k-steps60-import-flag.json", "60k, Label Studio's import flag on")]:
        run = _load(name)
        if not run:
            continue
        env = f", {run['label_studio_env']}" if run.get("label_studio_env") else ""
        print(f"{title} ({run['machine']}{env}):\n")
        print(view_table(run) + "\n")
        print(loop_table(run) + "\n")
        if gpu:
            print(gpu_composite_table(run, gpu) + "\n")
    for name, title, table in (("soak-cpu.json", "Soak, 6 new labels a round", soak_table),
                               ("soak-cpu-steady.json", "Soak, as many labels removed as added", soak_table),
                               ("soak-cpu-steady-500.json", "Soak, 500 rounds, as many labels removed as added",
                                soak_table),
                               ("soak-cpu-claim.json", "Soak, 6 new labels a round, the writer claim on a 60 s lease",
                                soak_table),
                               ("poll-reads-cpu.json", "A poll after lost webhooks", poll_reads_table),
                               ("mirror-saves-cpu.json", "A save of the mirror", mirror_saves_table),
                               ("ls-write-costs-60k.json", "Label Studio's writes", write_costs_table),
                               ("ls-write-costs-60k-claim.json", "Label Studio's writes, with the writer claim",
                                write_costs_table),
                               ("queue-push-60k.json", "A push in view mode and in queue mode", queue_push_table),
                               ("new-tasks-cpu.json", "New tasks and a quiet poll, the backend's own work",
                                new_tasks_table),
                               ("pool-gaps-cpu.json", "A training's read of a pool after deletions", pool_gaps_table)):
        data = _load(name)
        if data:
            processor = f", {data['processor']}" if data.get("processor") else ""
            print(f"{title} ({data['machine']}{processor}):\n")
            print(table(data) + "\n")
    print("Epoch time:\n")
    print(epoch_time_table() + "\n")
    for name, title in (("predict-load-cpu.json", "/predict under load"),
                        ("predict-load-cpu-before-inline-reads.json", "/predict under load, this session's machine, "
                                                                      "before the change of its reads"),
                        ("predict-load-cpu-inline-reads.json", "/predict under load, inline data read in the request, "
                                                               "the rest eight at a time")):
        load = _load(name)
        if load:
            print(f"{title} ({load['machine']}):\n")
            print(predict_load_table(load) + "\n")
    print(version_work_table() + "\n")
    print(budget_table() + "\n")
    print(budget_cpu_table() + "\n")
    print(demo_table())


if __name__ == "__main__":
    main()
