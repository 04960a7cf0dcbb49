"""GarmentCV: fine-tune pretrained CNNs on garment photos, ship them as ONNX, classify folders fast.

The package is split along the data: :mod:`garmentcv.models` (what can be built), :mod:`garmentcv.train`
(fit a model to a labelled folder), :mod:`garmentcv.export` (checkpoint -> ONNX), :mod:`garmentcv.infer`
(ONNX + folder -> rows). :mod:`garmentcv.image` and :mod:`garmentcv.data` are shared by all of them and
depend on numpy and Pillow only, so classification never needs torch.
"""

__version__ = "0.1.0"
