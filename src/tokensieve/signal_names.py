"""The names and units of the per-token signals (`tokensieve.scoring` computes them).

Light on purpose: the command line lists the names before torch is loaded.
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
    "entropy": "nats",
    "surprisal": "nats",
    "top1_prob": "probability",
    "margin": "probability",
    "attention_received": "mean weight",
    "attention_total": "summed weight",
}
