"""`POST /components`: electronic-component photos, with an honest "unknown" flag."""

from app.routes.classify_router import classify_router

router = classify_router(
    "/components", "components", default_top_k=3, max_top_k=10,
    summary="Classify photos of electronic components (capacitor, ic, relay, resistor, ...)",
    description="One prediction per `file` part, in order, with `unknown: true` when the model is not confident "
                "enough for the photo to be one of its classes (a cat, a blank wall): the threshold is the "
                "version's `unknown_threshold`, calibrated on the validation photos.",
)
