"""Inference: sliding window, ensembles and TTA, the predictor and cascade, batch runs over datasets,
postprocessing and its tuning."""
