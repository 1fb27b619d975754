"""The from-scratch GPT and everything that teaches it and runs it.

    network/    the GPT (gpt.py), LoRA, the model folder on disk, the device, the transformers oracle
    text/       the tokenizer (BPE training, tiktoken at run time), our chat format, foreign chat templates
    training/   the corpus, datasets, play dialogue, training, fine-tuning, validation loss, presets
    inference/  the backend protocol, the engine core, the torch engine, sampling, threads

Torch-free: text/, inference/ (but torch_engine.py), training/corpus.py and
dialogue.py; the llama.cpp path (quant/) and the TUI use only those. The
network, training and the torch engine import torch when used.
"""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"  # the corpus and the built-in tokenizer, shipped with the package
