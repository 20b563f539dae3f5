"""`POST /digits`: handwritten digit classification."""

from app.routes.classify_router import classify_router

router = classify_router(
    "/digits", "digits", default_top_k=3, max_top_k=10,
    summary="Classify photos or drawings of handwritten digits",
    description="One prediction per `file` part, in order. Any photo works: dark ink on light paper or the "
                "reverse, any size, off-centre, with alpha or EXIF rotation; it is normalised the way MNIST was "
                "made. `?debug=true` adds the 28x28 image the network saw.",
)
