"""BASELINE, NOT PART OF THE SERVICE: a typical tutorial FastAPI app serving the same weights.

What `python -m bench.serving` compares the project against: an async endpoint taking an
`UploadFile`, decoding and running the model inline on the event loop, one or more uvicorn workers.
Run: `MODELHOUSE_BASELINE_TASK=digits uvicorn bench.peers.tutorial_app:app [--workers 2]`. It reads the weights and
preprocessing numbers from the registry's production version so both serve identical models.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from models.registry import ModelRegistry
from models.runtime import load_model

TASK = os.environ.get("MODELHOUSE_BASELINE_TASK", "digits")
torch.set_num_threads(int(os.environ.get("MODELHOUSE_TORCH_THREADS", "1")))
model = load_model(ModelRegistry(), TASK, "production", torch.device("cpu"))
preset = model.preprocessing
MEAN = torch.tensor(preset["mean"]).view(-1, 1, 1)
STD = torch.tensor(preset["std"]).view(-1, 1, 1)
MODE = "L" if preset.get("channels", 1) == 1 else "RGB"
SIZE = tuple(preset["size"])
app = FastAPI(title="tutorial baseline")


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post(f"/{TASK}" if TASK != "imagenet" else "/imagenet/top5")
async def predict(file: UploadFile = File(...)) -> dict[str, object]:
    data = await file.read()
    image = Image.open(io.BytesIO(data)).convert(MODE).resize((SIZE[1], SIZE[0]))
    array = np.asarray(image, dtype=np.float32) / 255.0
    x = torch.from_numpy(array).unsqueeze(0) if MODE == "L" else torch.from_numpy(array).permute(2, 0, 1)
    x = ((x - MEAN) / STD).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model.network(x), dim=1)[0]
    values, indices = probabilities.topk(5 if TASK == "imagenet" else 3)
    top = [{"label": model.labels[i], "probability": float(p)} for p, i in zip(values, indices)]
    return {"predictions": [{"filename": file.filename, "label": top[0]["label"], "top": top}]}
