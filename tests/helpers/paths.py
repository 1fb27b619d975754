"""Where the checkout is, for tests that run its files or scripts."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_DIR = ROOT / "chatapp" / "builtin"
