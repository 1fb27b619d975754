"""The from-scratch GPT and everything that teaches it and runs it.

    network/    the GPT (gpt.py), LoRA, the model folder on disk, the device, the transformers oracle
    text/       the tokenizer (BPE training, tiktoken at run time), our chat format, foreign chat templates
    training/   the corpus, datasets, play dialogue, training, fine-tuning, validation loss, presets
    inference/  the backend protocol, the engine core, the torch engine, sampling, threads

Torch-free: text/, inference/ (but torch_engine.py and compiled_step.py),
training/corpus.py and dialogue.py, and network/safetensors_header.py (the
weights file's header, the GPT's tensor shapes); the llama.cpp path (quant/)
and the TUI use only those. The network, training, the torch engine and its
compiled decode step (inference/compiled_step.py) import torch when used.
"""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"  # the corpus and the built-in tokenizer, shipped with the package
