"""Lower-level helpers of the synthetic-data stages (magpie, respond, judge, pairs).

Stages never import each other (docs/architecture.md); what they share lives here: chat-template
derivation and instruction sanitising (:mod:`curate.synth.templates`), judge prompts, output parsing and
expected-value scoring (:mod:`curate.synth.judging`), and small row helpers (:mod:`curate.synth.rows`).
"""
