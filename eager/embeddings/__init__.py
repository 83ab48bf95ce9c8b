"""Item embeddings: semantic (text encoders) and behavioural (from SASRec)."""
