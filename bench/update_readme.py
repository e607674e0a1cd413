"""Copy the latest bench/results/*.md tables into README.md between the BENCH markers.

Usage: .venv/bin/python bench/update_readme.py   (run after the benchmarks you re-ran)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Order in the README: the ML core first, then the service.
ORDER = [
    "safety_frontier.md",
    "judge_quality.md",
    "train_step_batch8.md",
    "train_step.md",
    "safety_guard.md",
    "safety_guard_sap_sweep.md",
    "alignment.md",
    "eval_speed.md",
    "api_latency.md",
    "load.md",
]
# The command that produced each table (as last run).
COMMANDS = {
    "train_step.md": "OMP_NUM_THREADS=1 .venv/bin/python bench/train_step.py --models smollm2,tiny --batch 2 "
    "--seq 128 --steps 3 --rounds 2",
    "train_step_batch8.md": "OMP_NUM_THREADS=2 .venv/bin/python bench/train_step.py --models smollm2 "
    "--guards none,anchor,anchor:every=2 --batch 8 --seq 128 --steps 4 --rounds 2 --threads 2 "
    "--out bench/results/train_step_batch8",
    "judge_quality.md": ".venv/bin/python bench/judge_quality.py",
    "safety_guard.md": ".venv/bin/python bench/safety_guard.py --cache ~/.cache/safetune/models --steps 36 "
    "--lr 5e-4 --harmful 200 --benign 100 --max-new-tokens 32 --guards 'none,sap,sap:probe_step=0.25,ema'",
    "safety_guard_sap_sweep.md": ".venv/bin/python bench/safety_guard.py --cache ~/.cache/safetune/models "
    "--steps 36 --lr 5e-4 --harmful 200 --benign 100 --max-new-tokens 32 --datasets benign "
    "--guards 'none,sap:refresh_every=1,sap:probe_layers=3/9,sap:probe_batch_size=8' "
    "--out bench/results/safety_guard_sap_sweep.md",
    "api_latency.md": "nice -n 19 .venv/bin/python bench/api_latency.py --redis-url redis://127.0.0.1:6391/0 "
    "--seconds 12",
    "load.md": ".venv/bin/python bench/load.py --clients 16 --seconds 20",
    "eval_speed.md": ".venv/bin/python bench/eval_speed.py",
}


def render() -> str:
    parts = []
    for name in ORDER:
        path = RESULTS / name
        if path.exists():
            text = path.read_text().strip()
            if name in COMMANDS:
                text = f"`{COMMANDS[name]}`\n\n{text}"
            # Demote headings so they nest under the README's "Benchmarks" section.
            parts.append(re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.M))
    return "\n\n".join(parts)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{render()}\n{end}{after}")
    print(f"README benchmarks updated from {RESULTS}")  # noqa: T201


if __name__ == "__main__":
    main()
