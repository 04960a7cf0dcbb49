"""Experiments behind training defaults: transfer learning offline and the ``--preset scratch`` choice."""
