"""Step 4: a sentiment classifier on BERT (the classic first BERT exercise), and the task heads.

What it teaches: putting a task on a pretrained encoder. pooler_output (tanh of a linear map
of h_[CLS]) -> dropout -> Linear -> class logits, trained with cross-entropy, either with BERT
frozen (`--option pretrain`: only the linear layer learns, lr 1e-3) or fine-tuned with it
(`--option finetune`, lr 2e-5). Datasets: `--dataset sst` (5 classes) or `cfimdb` (2).
Where: minibert/classifier.py (SentimentClassifier.sentence_vector and .classify, which
forward calls); the multitask heads of the
later steps are in minibert/heads.py (MultitaskBERT.sentiment_logits, paraphrase_logit,
similarity_score, mean_pool).
Graded by: checks/test_classifier.py and checks/test_heads.py (`pytest checks/ -m step04`).
Runs `python -m minibert sentiment` and prints the best dev accuracy; files in
runs/sentiment-DATASET-OPTION/ (predictions in the CS224N format).
Expected: the minbert assignment reports with bert-base-uncased SST dev 0.391 (pretrain) /
0.515 (finetune), CFIMDB dev 0.966 (finetune). Ours with all-MiniLM-L6-v2: see results/.
"""

import sys

from _common import option, step_main

if __name__ == "__main__":
    # the folder the stage would pick itself, named here so a run again can set it aside
    out = f"runs/sentiment-{option(sys.argv[1:], '--dataset', 'sst')}-{option(sys.argv[1:], '--option', 'pretrain')}"
    sys.exit(step_main("step04", __doc__, command=["sentiment", "--out", out],
                       quick=["--limit", "300", "--epochs", "2", "--max-length", "64", "--out", f"{out}-quick"]))
