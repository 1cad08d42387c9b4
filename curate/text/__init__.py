"""Text utilities without Polars: :mod:`curate.text.segment` splits messages into prose and protected spans for
selective translation, :mod:`curate.text.verify` checks a translation against its source."""
