"""Experiments behind training defaults: transfer learning offline, the ``--preset scratch`` choice and the
unknown-item scores."""
