"""Step 1: BERT, the encoder: embeddings, multi-head self-attention, the transformer layer.

What it teaches: token + position + segment embeddings (BERT section 3), scaled dot-product
attention softmax(Q K^T / sqrt(d) + mask) V with a padding mask (Vaswani et al. eq. 1), and
the post-LayerNorm residual block.
Where: minibert/model.py (BertEmbeddings.forward, BertSelfAttention.attend, BertLayer.forward).
Graded by: checks/test_model.py (`pytest checks/ -m step01`), which compares the encoder
with transformers' BertModel on the real weights (max abs difference < 1e-5).
Then runs `python -m minibert check-model`: it loads all-MiniLM-L6-v2 (6 layers, hidden 384,
22.7M parameters) and expects the paraphrase "Someone plays the guitar." closer to
"A man is playing a guitar." than an unrelated sentence (cosine of mean-pooled vectors).
That run tokenizes the sentences with step 2's WordPiece: in a student copy it stops at
"step02: implement ..." until step 2 is written (step 1's checks do not need it).
"""

import sys

from _common import step_main

if __name__ == "__main__":
    sys.exit(step_main("step01", __doc__, command=["check-model"]))
