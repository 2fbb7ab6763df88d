"""Machine translation (the ``mt`` service): Marian models on CTranslate2, tokenized with SentencePiece."""
