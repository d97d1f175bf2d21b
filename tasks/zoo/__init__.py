"""The Tiny RNN Zoo: seq2seq GRU models trained on character-level addition (UNF paper §4.1)."""
