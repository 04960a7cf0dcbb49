"""GarmentCV benchmarks: model-only latency/throughput, end to end on a folder, the FLOP ceiling.

Run ``python -m benchmarks --help`` from the repository root; see ``benchmarks/README.md``. This package
is not installed with garmentcv; its ``--tiny`` smoke run is a test marked ``benchmark``, outside the default run.
"""
