"""The from-scratch GPT and everything that teaches it.

The torch-free face (tokenizer, chat format, sampling parameters, backend
protocol, corpus) imports no torch; the network, training and the torch
engine import it when used.
"""
