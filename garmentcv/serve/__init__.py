"""``gcv serve``: classify photos as they arrive, over HTTP, with the rows ``gcv classify`` writes.

* :mod:`garmentcv.serve.handler`: one model file opened once; image bytes -> rows (no web framework).
* :mod:`garmentcv.serve.settings`: the service's settings and their checks (no web framework).
* :mod:`garmentcv.serve.batching`: concurrent requests' images run together in one model call, bounded queue.
* :mod:`garmentcv.serve.app`: the FastAPI app (routes, limits, API key, metrics); needs ``garmentcv[serve]``.
* :mod:`garmentcv.serve.ray_serve`: the same handler as a Ray Serve deployment.
* :mod:`garmentcv.serve.review`: the review app in the browser (its page and routes, mounted by the app).
"""
