"""The engines that run ``gcv classify``: :mod:`~garmentcv.infer.engines.local` (this machine) and
:mod:`~garmentcv.infer.engines.ray` (a Ray cluster). Both write their rows through
:class:`garmentcv.infer.classify.ClassifyRun`."""
