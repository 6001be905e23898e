"""Reddit ingestion, cleaning, per-method datasets and adapter training.

Kept import-light on purpose: `python -m training <step>` imports only the step it runs.
"""
