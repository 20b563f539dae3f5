"""The Open Inference Protocol v2 (KServe, Triton HTTP): `routes` (the endpoints), `tensors` (the wire
format, binary tensor data included) and `kinds` (each model kind's tensor signature). See docs/oip.md."""

from app.v2.routes import V2Routes

__all__ = ["V2Routes"]
