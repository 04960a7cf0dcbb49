"""``python -m garmentcv.train``: gcv train, with the same options; the form torchrun starts.

``torchrun --nproc_per_node=N -m garmentcv.train DATA ...`` trains data-parallel (see
:mod:`garmentcv.train.distributed`).
"""

from garmentcv.train.cli import main

if __name__ == "__main__":
    main()
