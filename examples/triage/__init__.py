"""The support-triage demo: a multi-agent covey workflow with an offline ML classifier."""
