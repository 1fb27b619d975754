"""GGUF export, quantization and the llama.cpp runtime.

    gguf_layout     our GGUF: the export types, tensor names and shapes; what export, quantize and check share
    gguf_vocab      our tiktoken ranks <-> llama.cpp's "gpt2" BPE vocabulary
    weights         safetensors read with numpy (F32, F16, BF16), no torch
    gguf_export     a model folder -> a GGUF file of any supported type
    quantize        llama.cpp's own quantizer, and which tensors fell back
    gguf_header     a bounded walk of a GGUF header and tensor table, without the gguf package
    gguf_check      a GGUF file checked from its header before llama.cpp sees it
    llama_log       llama.cpp's log lines into a file, never onto the screen
    llama_native    llama.cpp through llama-cpp-python's C bindings alone (LoadedLlama), never its Llama class
    llama_load      a checked GGUF file opened in llama.cpp: the one place that loads a model there
    llama_backend   the llama.cpp engine: the engine core (model/inference/engine_core.py) on llama-cpp-python
    llama_worker    that engine in a worker process, behind the backend protocol (what the app uses)
    worker_start    starting that worker process early (the command line has it load the file it names)
    worker_fork     chatapp.launch forking that worker before any other import (Linux)
    gguf_validation_loss  nats per token / per character / perplexity of a GGUF file
    hf_export       a model folder -> a Hugging Face transformers folder (GPT2LMHeadModel)
    ollama_export   the Modelfile beside a GGUF file, for `ollama create`

Nothing here imports torch (the desktop bundle has none) and nothing imports
chatapp: the arrows go chatapp -> quant -> model (the contracts in pyproject.toml,
checked by tests/structure/test_layering.py).
"""
