"""Extraction stage: dataset readers, audio loading, WavLM/BERT encoders and the cache writer loop."""
