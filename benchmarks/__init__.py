"""Benchmarks (``make bench``): training throughput against a deepspeech.pytorch-style loop,
inference speed with accuracy beside it, the hardware limit, scaling with input length and
batch size. Ratios are measured side by side in one run; :mod:`benchmarks.run` writes them.
"""
