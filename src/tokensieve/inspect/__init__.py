"""`tokensieve inspect`: per-token signals of a text or of the model's answer, as a report.

The signal names live here, light, so the command line can list them before torch loads;
the signals themselves are computed in `tokensieve.signals`.
"""

SIGNALS = (
    "entropy",
    "surprisal",
    "top1_prob",
    "margin",
    "attention_received",
    "attention_total",
)
UNITS = {
    "kv_kept": "share of layers × KV heads keeping it",
    "entropy": "nats",
    "surprisal": "nats",
    "top1_prob": "probability",
    "margin": "probability",
    "attention_received": "mean weight",
    "attention_total": "summed weight",
}
