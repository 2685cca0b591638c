"""Applications: forecasting, character language models, sequence classification."""
