"""Curating a dataset with a model file's ``embedding`` output (numpy, scikit-learn, cleanlab; no torch, except
:mod:`garmentcv.curate.kfold`).

* :mod:`garmentcv.curate.embed`: embeddings, probabilities and unknown scores of a list of images, through the
  classify pipeline and either runtime.
* :mod:`garmentcv.curate.audit`: ``gcv data audit``: likely label errors, duplicates, outliers and images of none of
  the classes, as a fix list and a report page.
* :mod:`garmentcv.curate.kfold`: out-of-sample probabilities by K fine-tunings of a gcv train checkpoint
  (``gcv data audit --probs kfold-training``; needs torch, imported when called).
* :mod:`garmentcv.curate.fixes`: the fix list, and its conversion into a corrections file for
  ``gcv train --corrections``.
* :mod:`garmentcv.curate.label_next`: ``gcv data label-next``: the images to label next, and Label Studio files.
"""
