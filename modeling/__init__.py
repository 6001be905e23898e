"""The model, shared by training and serving: the base model, its weight formats, LoRA adapters.

    base_model.py  the configured reference -> a checkpoint (GGUF converted once) -> LoadedBase,
                   quantized nf4 / int8 / int4 / none (`auto` is resolved by serving: chatbot/calibration.py)
    int8.py        weight-only int8 linear layers (PyTorch's CPU kernel)
    int4.py        weight-only 4-bit layers in GGUF Q4_1's form (PyTorch's int4 CPU kernel)
    adapters.py    adapter folders: file names, checks against the base, attaching with peft
    multi_lora.py  every adapter of a layer packed side by side, one row per adapter in a batch
    fused.py       sibling projections (Q, K, V; gate, up) stacked into one layer for decoding

Training imports this package and never the serving package (chatbot).
"""
