"""The training history of a model folder: a CSV, and a plot redrawn at every evaluation."""

from __future__ import annotations

import csv
from pathlib import Path

HISTORY_CSV = "history.csv"
HISTORY_PLOT = "history.png"
COLUMNS = ("step", "tokens_seen", "train_loss", "val_loss", "learning_rate", "elapsed_s")


class History:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.csv_path = self.folder / HISTORY_CSV

    def reset(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    def rows(self) -> list[dict]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="") as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def add(self, step, tokens_seen, train_loss, val_loss, learning_rate, elapsed_s) -> None:
        if not self.csv_path.is_file():
            self.reset()
        # a resumed run may repeat steps written after the last checkpoint: keep the newest
        rows = [r for r in self.rows() if r["step"] < step]
        rows.append(dict(zip(COLUMNS, (step, tokens_seen, train_loss, val_loss, learning_rate, elapsed_s))))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow(_format(row[c]) for c in COLUMNS)
        self.plot(rows)

    def plot(self, rows: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tokens = [r["tokens_seen"] / 1e6 for r in rows]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.plot(tokens, [r["train_loss"] for r in rows], label="train")
        ax.plot(tokens, [r["val_loss"] for r in rows], label="validation")
        ax.set_xlabel("tokens seen (millions)")
        ax.set_ylabel("loss (nats per token)")
        ax.set_title(self.folder.name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.folder / HISTORY_PLOT)
        plt.close(fig)


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
