"""Step costs: model shapes, GPU figures, the analytic and measured cost models, and the extra work of
multi-LoRA adapters and colocated models.
"""
