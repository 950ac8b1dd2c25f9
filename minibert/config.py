"""BertConfig: the handful of numbers that define a BERT, read from a HF config.json.

We keep Hugging Face's key names so a config.json written by transformers loads here and
one written here loads in transformers. Unknown keys are kept and written back unchanged.
"""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from minibert.errors import WeightsError


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # erf-GELU, as in the original BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    extra: dict = field(default_factory=dict, repr=False)  # other keys, written back as they came

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act {self.hidden_act!r}: minibert implements BERT's erf 'gelu' only")
        if self.position_embedding_type != "absolute":
            raise ValueError(f"position_embedding_type {self.position_embedding_type!r}: "
                             "minibert implements 'absolute' position embeddings only")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def from_json(cls, path) -> "BertConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no config.json (a BERT folder needs config.json "
                                    "and model.safetensors)") from None
        except json.JSONDecodeError as e:
            raise WeightsError(f"{path}: not valid JSON ({e})") from None
        if d.get("model_type", "bert") != "bert":
            raise WeightsError(f"{path}: model_type is {d['model_type']!r}, expected 'bert'")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update({k: v for k, v in asdict(self).items() if k != "extra"})
        d["model_type"] = "bert"
        d.setdefault("architectures", ["BertModel"])
        return d

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
