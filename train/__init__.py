"""Training stage: reads only the feature cache, never media or encoders."""
