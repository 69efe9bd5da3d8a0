"""swrr-predict and swrr-export: apply a trained model bundle to new recordings."""
