"""The one predicting path: a read image in, lesion mask and the model's statement out."""
