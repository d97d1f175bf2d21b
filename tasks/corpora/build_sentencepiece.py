"""Rebuilds `brown_sp32k.model`, the shipped subword tokenizer of the Transformer task.

Made with ``python -m unf_lopt.tasks.corpora.build_sentencepiece``: a 32,000-piece
unigram SentencePiece model trained on the training split of the shipped Brown
Corpus (`brown.txt.xz`), with pad/eos/unk at ids 0/1/2.
"""

from unf_lopt.tasks import data, tokenizers


def main() -> None:
  proto = tokenizers.train_sentencepiece(data.read_brown_corpus()["train"],
                                         tokenizers.SHIPPED_VOCAB_SIZE)
  tokenizers.SHIPPED_SENTENCEPIECE_FILE.write_bytes(proto)
  print(f"{len(proto)} bytes -> {tokenizers.SHIPPED_SENTENCEPIECE_FILE}")


if __name__ == "__main__":
  main()
