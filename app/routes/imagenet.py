"""`POST /imagenet/top5`: ImageNet-1k classification of photos (the model zoo's production version)."""

from app.routes.classify_router import classify_router

router = classify_router(
    "/imagenet/top5", "imagenet", default_top_k=5, max_top_k=20,
    summary="Classify photos into the 1000 ImageNet classes (top-5 by default)",
    description="One prediction per `file` part, in order. Each `top` entry has the full class line as `label` "
                "(e.g. \"tench, Tinca tinca\"), its `index` (0-999) and `probability`. Photos are resized and "
                "centre-cropped as the version's manifest says (EfficientNet-Lite0 by default: 256 px, crop 224).",
)
