"""Unknown-item detection: scores that say an image is none of the model's classes.

:mod:`garmentcv.unknowns.scores` (numpy only) fits and computes the scores and their threshold;
:mod:`garmentcv.unknowns.graph` (torch) computes the same score as a module that exports into the ONNX file.
"""
